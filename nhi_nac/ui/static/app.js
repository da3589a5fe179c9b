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

// Segment-map editor: server-side validation as you type, problems pinned to lines.
const editor = document.getElementById("map-yaml");
if (editor) {
  const list = document.getElementById("problems");
  const csrf = document.querySelector("input[name=csrf]").value;
  let timer = null;
  const validate = async () => {
    const body = new URLSearchParams({ csrf, yaml: editor.value });
    const resp = await fetch("/ui/segments/validate", { method: "POST", body });
    const data = await resp.json();
    list.replaceChildren();
    for (const p of data.problems) {
      const li = document.createElement("li");
      li.className = `problem-${p.severity}`;
      li.textContent = `line ${p.line}, column ${p.column}: ${p.severity}: ${p.message}`;
      li.dataset.line = p.line;
      list.appendChild(li);
    }
    if (!data.problems.length) {
      const li = document.createElement("li");
      li.textContent = "No problems.";
      list.appendChild(li);
    }
  };
  editor.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(validate, 400); });
}
