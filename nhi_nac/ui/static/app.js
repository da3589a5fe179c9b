// Small progressive enhancements; every page works without this file.
"use strict";

// Confirm destructive actions (buttons with data-confirm).
document.addEventListener("submit", (ev) => {
  const button = ev.submitter;
  const question = button && button.dataset.confirm;
  if (question && !window.confirm(question)) ev.preventDefault();
});

// Live admissions over server-sent events.
const tbody = document.getElementById("admissions");
if (tbody && window.EventSource) {
  const source = new EventSource(tbody.dataset.stream);
  source.addEventListener("admission", (msg) => {
    const a = JSON.parse(msg.data);
    const tr = document.createElement("tr");
    const cells = [a.at, a.decision, a.identity || "—", a.method, `${a.nas} ${a.port || ""}`,
                   a.mac || "—", a.vlan || "—", (a.reasons || []).join("; ")];
    cells.forEach((text, i) => {
      const td = document.createElement("td");
      td.textContent = text;
      if (i === 1) td.className = `d-${a.decision}`;
      tr.appendChild(td);
    });
    tbody.prepend(tr);
    const status = document.getElementById("live-status");
    if (status) status.textContent = `New decision: ${a.decision} ${a.identity || a.mac || ""}`;
  });
}

// Segment-map editor: server-side validation as you type; each problem is marked in the
// line-number gutter beside its line, and its "line N, column C" link puts the caret there.
const editor = document.getElementById("map-yaml");
if (editor) {
  const list = document.getElementById("problems");
  const gutter = document.getElementById("map-gutter");
  const csrf = document.querySelector("input[name=csrf]").value;
  let marks = new Map();
  let timer = null;
  const drawGutter = () => {
    const lines = editor.value.split("\n").length;
    const spans = [];
    for (let i = 1; i <= lines; i++) {
      const span = document.createElement("span");
      span.dataset.line = i;
      span.textContent = String(i);
      if (marks.has(i)) span.className = `mark-${marks.get(i)}`;
      spans.push(span, document.createTextNode("\n"));
    }
    gutter.replaceChildren(...spans);
    gutter.scrollTop = editor.scrollTop;
  };
  const goTo = (line, column) => {
    const starts = [0];
    for (let i = 0; i < editor.value.length; i++) if (editor.value[i] === "\n") starts.push(i + 1);
    const at = Math.min((starts[line - 1] ?? 0) + Math.max(column - 1, 0), editor.value.length);
    editor.focus();
    editor.setSelectionRange(at, at);
    const lineHeight = parseFloat(getComputedStyle(editor).lineHeight) || 18;
    editor.scrollTop = Math.max(0, (line - 3) * lineHeight);
  };
  const validate = async () => {
    const body = new URLSearchParams({ csrf, yaml: editor.value });
    const resp = await fetch("/ui/segments/validate", { method: "POST", body });
    const data = await resp.json();
    list.replaceChildren();
    marks = new Map();
    for (const p of data.problems) {
      if (marks.get(p.line) !== "error") marks.set(p.line, p.severity);
      const li = document.createElement("li");
      li.className = `problem-${p.severity}`;
      li.dataset.line = p.line;
      const link = document.createElement("a");
      link.href = "#map-yaml";
      link.className = "goto";
      link.dataset.line = p.line;
      link.dataset.column = p.column;
      link.textContent = `line ${p.line}, column ${p.column}`;
      li.append(link, `: ${p.severity}: ${p.message}`);
      list.appendChild(li);
    }
    if (!data.problems.length) {
      const li = document.createElement("li");
      li.textContent = "No problems.";
      list.appendChild(li);
    }
    drawGutter();
  };
  list.addEventListener("click", (ev) => {
    const link = ev.target.closest("a.goto");
    if (!link) return;
    ev.preventDefault();
    goTo(Number(link.dataset.line), Number(link.dataset.column));
  });
  document.querySelectorAll("#map-gutter span[class]").forEach((span) => {
    marks.set(Number(span.dataset.line), span.className.replace("mark-", ""));
  });
  editor.addEventListener("scroll", () => { gutter.scrollTop = editor.scrollTop; });
  editor.addEventListener("input", () => {
    drawGutter();
    clearTimeout(timer);
    timer = setTimeout(validate, 400);
  });
}
