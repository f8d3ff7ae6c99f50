// The dashboard's only script: live figures over Server-Sent Events, sparklines, the log's tail, and confirmations.
// Pages work without it; it only keeps them fresh.
(() => {
  "use strict";
  const history = new Map();
  const maxPoints = 60;

  function number(text) {
    const value = Number(String(text).replace(/,/g, ""));
    return Number.isFinite(value) ? value : null;
  }

  function drawSpark(svg, points) {
    const max = Math.max(1, ...points);
    const step = points.length > 1 ? 120 / (maxPoints - 1) : 0;
    const start = 120 - step * (points.length - 1);
    const line = points.map((p, i) => `${(start + i * step).toFixed(1)},${(23 - (p / max) * 22).toFixed(1)}`).join(" ");
    svg.innerHTML = `<polyline fill="none" stroke="currentColor" stroke-width="1.5" points="${line}"></polyline>`;
    svg.setAttribute("data-points", points.length);
  }

  function apply(figures) {
    // The store lists only queues that hold something: a queue on the page but not in the figures has emptied.
    document.querySelectorAll('[data-live^="queue."], [data-spark^="queue."]').forEach(el => {
      const key = el.dataset.live || el.dataset.spark;
      if (!(key in figures)) figures[key] = "0";
    });
    for (const [key, value] of Object.entries(figures)) {
      document.querySelectorAll(`[data-live="${CSS.escape(key)}"]`).forEach(el => { el.textContent = value; });
      const svg = document.querySelector(`[data-spark="${CSS.escape(key)}"]`);
      if (svg) {
        const points = history.get(key) || [];
        const n = number(value);
        if (n !== null) {
          points.push(n);
          if (points.length > maxPoints) points.shift();
          history.set(key, points);
          drawSpark(svg, points);
        }
      }
    }
    const tail = document.querySelector("[data-tail]");
    if (tail && figures.log_head !== undefined && tail.dataset.head !== figures.log_head) {
      const first = tail.dataset.head === undefined;
      tail.dataset.head = figures.log_head;
      if (!first) {
        fetch(tail.dataset.tail, { credentials: "same-origin" })
          .then(r => (r.ok ? r.text() : null))
          .then(html => { if (html !== null) tail.innerHTML = html; });
      }
    }
    document.body.dataset.liveUpdates = String(Number(document.body.dataset.liveUpdates || "0") + 1);
  }

  function connect() {
    const url = document.body.dataset.live;
    if (!url || !window.EventSource) return;
    const source = new EventSource(url);
    source.addEventListener("figures", e => apply(JSON.parse(e.data)));
  }

  document.addEventListener("submit", e => {
    const form = e.target;
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) e.preventDefault();
  });
  document.addEventListener("DOMContentLoaded", connect);
})();
