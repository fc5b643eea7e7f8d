declare module 'katex/contrib/auto-render' {
  export default function renderMathInElement(root: HTMLElement, options?: object): void;
}
