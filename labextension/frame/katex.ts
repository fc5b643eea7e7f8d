/** KaTeX and its auto-render for output frames (Markdown and LaTeX outputs with math). */
import renderMathInElement from 'katex/contrib/auto-render';

(window as unknown as { renderMathInElement: typeof renderMathInElement }).renderMathInElement =
  renderMathInElement;
