/**
 * The sandbox card's line naming the secrets a kernel was given. Kept apart from the panel, which
 * needs a running Lab, so that it can be tested with a stand-in document.
 */

export const SECRETS_TITLE =
  "Environment variables this kernel was given from the server's secret stores; " +
  'their values are masked in its output';

/**
 * `secrets OPENAI_API_KEY, DB_PASSWORD`, or null when there are none or the server is too old to
 * say. The names come from the server but are set as text only, never parsed as markup.
 */
export function secretsLine(
  secrets: readonly string[] | undefined,
  doc: Pick<Document, 'createElement'> = document
): HTMLElement | null {
  if (!secrets?.length) {
    return null;
  }
  const node = doc.createElement('div');
  node.className = 'hopx-SandboxCard-secrets';
  node.textContent = `secrets ${secrets.join(', ')}`;
  node.title = SECRETS_TITLE;
  return node;
}
