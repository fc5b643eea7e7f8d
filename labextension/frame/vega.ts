/** Vega and Vega-Lite for output frames: vega-embed, with Vega and Vega-Lite inside it. */
import embed from 'vega-embed';

(window as unknown as { vegaEmbed: typeof embed }).vegaEmbed = embed;
