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
// Widgets' stylesheet comes out beside their script (widgets.css), its images as data. Icon
// fonts (Font Awesome, about 2 MB as data) are left out: a button's icon does not show.
const withoutFonts = {
  name: 'without-fonts',
  setup(build) {
    build.onResolve({ filter: /webfonts\/.*$|\.(woff2?|ttf|eot)$/ }, args => ({
      path: args.path,
      namespace: 'without-fonts'
    }));
    build.onLoad({ filter: /.*/, namespace: 'without-fonts' }, () => ({ contents: '', loader: 'empty' }));
  }
};
await build({
  ...common,
  entryPoints: [join(here, 'widgets.ts')],
  outfile: join(out, 'widgets.js'),
  plugins: [withoutFonts],
  // Written for webpack: one module sets where its chunks load from, which nothing here uses.
  banner: { js: 'var __webpack_public_path__ = "";' },
  loader: { '.svg': 'dataurl', '.png': 'dataurl', '.gif': 'dataurl' }
});
await build({
  bundle: true,
  minify: true,
  logLevel: 'warning',
  entryPoints: [join(here, '..', 'node_modules', 'katex', 'dist', 'katex.min.css')],
  outfile: join(out, 'katex.css'),
  loader: { '.woff2': 'dataurl', '.woff': 'empty', '.ttf': 'empty' }
});
// Two Plotly builds: the frame runtime picks one per figure (plotlyBundle.ts).
copyFileSync(
  join(here, '..', 'node_modules', 'plotly.js-dist-min', 'plotly.min.js'),
  join(out, 'plotly.min.js')
);
copyFileSync(
  join(here, '..', 'node_modules', 'plotly.js-cartesian-dist-min', 'plotly-cartesian.min.js'),
  join(out, 'plotly-cartesian.min.js')
);
