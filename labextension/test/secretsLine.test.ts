import { strict as assert } from 'node:assert';
import { test } from 'node:test';

import { SECRETS_TITLE, secretsLine } from '../src/secretsLine';

/**
 * Just enough of an element for the line: text is kept as given, and setting markup fails the
 * test, so a name can only ever reach the page as text.
 */
class FakeElement {
  constructor(readonly tagName: string) {}
  className = '';
  textContent = '';
  title = '';
  set innerHTML(_: string) {
    throw new Error('innerHTML was set');
  }
  set outerHTML(_: string) {
    throw new Error('outerHTML was set');
  }
  insertAdjacentHTML(): void {
    throw new Error('insertAdjacentHTML was called');
  }
}

const created: FakeElement[] = [];
const fakeDocument = {
  createElement(tag: string): FakeElement {
    const node = new FakeElement(tag);
    created.push(node);
    return node;
  }
} as unknown as Document;

test('the secrets line names the secrets, with a tooltip saying their values are masked', () => {
  const line = secretsLine(['DB_PASSWORD', 'OPENAI_API_KEY'], fakeDocument);
  assert.ok(line);
  assert.equal(line.className, 'hopx-SandboxCard-secrets');
  assert.equal(line.textContent, 'secrets DB_PASSWORD, OPENAI_API_KEY');
  assert.equal(line.title, SECRETS_TITLE);
  assert.match(line.title, /masked/);
});

test('there is no secrets line without secrets, or from a server that does not send them', () => {
  created.length = 0;
  assert.equal(secretsLine([], fakeDocument), null);
  assert.equal(secretsLine(undefined, fakeDocument), null);
  assert.equal(created.length, 0);
});

test('a name with markup in it is shown as text', () => {
  created.length = 0;
  const name = '<img src=x onerror="alert(1)">&amp;';
  const line = secretsLine([name], fakeDocument);
  assert.ok(line);
  assert.equal(line.textContent, `secrets ${name}`);
  // One element, the line itself: nothing was built from the name.
  assert.equal(created.length, 1);
});
