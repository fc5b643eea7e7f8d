import { LabIcon } from '@jupyterlab/ui-components';

const LOCK_SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <path class="jp-icon3" fill="#616161" d="M12 1a5 5 0 0 0-5 5v3H6a2 2 0 0 0-2 2v10a2 2 0 0 0 2 2h12a2 2 0 0 0 2-2V11a2 2 0 0 0-2-2h-1V6a5 5 0 0 0-5-5zm-3 5a3 3 0 1 1 6 0v3H9V6zm3 8a2 2 0 0 1 1 3.7V20h-2v-2.3A2 2 0 0 1 12 14z"/>
</svg>`;

/** The sandbox lock, in the status bar and on the sidebar tab. */
export const sandboxIcon = new LabIcon({ name: 'hopx:sandbox', svgstr: LOCK_SVG });
