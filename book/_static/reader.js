// Reader aids for the course book (book/_ext/reader_aids.py): marks each display equation (and, on a
// phone, each figure) that is wider than its column, so reader.css can show a scroll cue, once
// MathJax has typeset the page and again when the window changes size.
(function () {
  function scroller(div) {
    // the element that scrolls: the equation's block, or MathJax's container inside it
    const candidates = [div, ...div.querySelectorAll("mjx-container")];
    return candidates.find((el) => el.scrollWidth > el.clientWidth + 1) || null;
  }
  function watch(el, owner) {
    // once the reader has scrolled el to its end, owner's cue goes
    if (el.dataset.dgmWatched) return;
    el.dataset.dgmWatched = "1";
    el.addEventListener("scroll", () => {
      owner.classList.toggle("dgm-scrolled-end", el.scrollLeft + el.clientWidth >= el.scrollWidth - 2);
    }, { passive: true });
  }
  function mark() {
    document.querySelectorAll("div.math").forEach((div) => {
      const el = scroller(div);
      div.classList.toggle("dgm-scrolls", el !== null);
      if (el !== null) watch(el, div);
    });
    document.querySelectorAll("figure > a.image-reference").forEach((frame) => {
      const fig = frame.parentElement;
      const img = frame.querySelector("img");
      const wide = frame.scrollWidth > frame.clientWidth + 1;
      fig.classList.toggle("dgm-scrolls", wide);
      if (img && !img.complete && !img.dataset.dgmWatched) {  // a lazy figure: measure it once loaded
        img.dataset.dgmWatched = "1";
        img.addEventListener("load", mark, { once: true });
      }
      if (wide) watch(frame, fig);
    });
    document.documentElement.dataset.dgmEquationsMarked = "1";
  }
  function whenTypeset() {
    if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
      MathJax.startup.promise.then(mark);
    } else if (document.querySelector("div.math")) {
      setTimeout(whenTypeset, 100);  // MathJax is still loading
    } else {
      mark();
    }
  }
  window.addEventListener("load", whenTypeset);
  let pending = null;
  window.addEventListener("resize", () => {
    clearTimeout(pending);
    pending = setTimeout(mark, 150);
  });
})();
