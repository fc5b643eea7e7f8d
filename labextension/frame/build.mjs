// Builds what output frames load into the labextension's static folder (after the labextension
// itself, whose build owns that folder): self-contained scripts, and KaTeX's stylesheet with its
// fonts inlined, since a frame's policy admits fonts only as data.
import { build } from 'esbuild';
import { copyFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, '..', '..', 'hopx_kernel', 'labextension', 'static', 'frame');
mkdirSync(out, { recursive: true });

const common = { bundle: true, minify: true, format: 'iife', target: 'es2020', logLevel: 'warning' };
await build({ ...common, entryPoints: [join(here, 'runtime.ts')], outfile: join(out, 'runtime.js') });
await build({ ...common, entryPoints: [join(here, 'vega.ts')], outfile: join(out, 'vega.js') });
await build({ ...common, entryPoints: [join(here, 'katex.ts')], outfile: join(out, 'katex.js') });
await build({
  bundle: true,
  minify: true,
  logLevel: 'warning',
  entryPoints: [join(here, '..', 'node_modules', 'katex', 'dist', 'katex.min.css')],
  outfile: join(out, 'katex.css'),
  loader: { '.woff2': 'dataurl', '.woff': 'empty', '.ttf': 'empty' }
});
copyFileSync(
  join(here, '..', 'node_modules', 'plotly.js-dist-min', 'plotly.min.js'),
  join(out, 'plotly.min.js')
);
