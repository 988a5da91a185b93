// The curator's queue: reads /api/curate, posts decisions to /api/curate/decisions (CSRF header, basic auth
// from the browser). No inline script; text placed with textContent only.
"use strict";

(function () {
  const root = document.getElementById("curate");
  const status = document.getElementById("status");
  const byId = (id) => document.getElementById(id);

  function element(tag, text, attributes) {
    const node = document.createElement(tag);
    if (text) node.textContent = text;
    for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, value);
    return node;
  }

  async function decide(subject, key, action, label) {
    const response = await fetch("/api/curate/decisions", {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": root.dataset.csrf},
      body: JSON.stringify({subject: subject, key: key, action: action, label: label || null})});
    const body = await response.json();
    status.textContent = response.ok ? "Recorded: " + subject + " " + key + " " + action + (label ? " " + label : "")
                                     : body.message;
    status.classList.toggle("problem", !response.ok);
    if (response.ok) load();
  }

  function photos(uploads) {
    const box = element("div", "", {class: "curate-photos"});
    for (const upload of uploads) box.appendChild(element("img", "", {src: upload.photo, alt: upload.upload_id}));
    return box;
  }

  function withLabel(subject, key, action, buttonText) {
    const form = element("form");
    const input = element("input", "", {list: "curate-known", maxlength: "40", "aria-label": buttonText});
    form.append(input, element("button", buttonText, {type: "submit"}));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (input.value.trim()) decide(subject, key, action, input.value);
    });
    return form;
  }

  function button(text, onClick) {
    const node = element("button", text, {type: "button"});
    node.addEventListener("click", onClick);
    return node;
  }

  function render(queue) {
    const counts = queue.counts;
    byId("curate-counts").textContent = counts.agreed + " labels agreed by the community, " + counts.accepted +
      " accepted by curators, " + counts.disputed + " disputed";
    const known = byId("curate-known");
    known.replaceChildren(...queue.known.map((name) => element("option", "", {value: name})));
    const names = byId("curate-names");
    names.replaceChildren();
    for (const proposed of queue.names) {
      const item = element("section", "", {class: "curate-item", "data-name": proposed.name});
      const text = element("div");
      text.appendChild(element("h3", proposed.name + " (" + proposed.votes + " votes on " +
                                     proposed.uploads.length + " photos)"));
      if (proposed.nearest) {
        text.appendChild(element("p", "nearest: " + proposed.nearest + " (similarity " +
                                      proposed.similarity.toFixed(2) + ")", {class: "meta"}));
      }
      text.appendChild(photos(proposed.uploads));
      text.append(button("Accept the name", () => decide("name", proposed.name, "accept")),
                  button("Reject the name", () => decide("name", proposed.name, "reject")),
                  withLabel("name", proposed.name, "merge", "Merge into"));
      item.appendChild(text);
      names.appendChild(item);
    }
    const disputed = byId("curate-disputed");
    disputed.replaceChildren();
    for (const upload of queue.disputed) {
      const item = element("section", "", {class: "curate-item", "data-upload": upload.upload_id});
      item.appendChild(element("img", "", {src: upload.photo, alt: "a disputed photo"}));
      const text = element("div");
      text.appendChild(element("p", upload.tally.map((t) => t.label + " × " + t.clients).join(", ")));
      text.append(withLabel("upload", upload.upload_id, "accept", "Accept as"),
                  button("Reject", () => decide("upload", upload.upload_id, "reject")));
      item.appendChild(text);
      disputed.appendChild(item);
    }
  }

  async function load() {
    const response = await fetch("/api/curate", {credentials: "same-origin"});
    if (response.ok) render(await response.json());
    else status.textContent = "The queue could not be read (" + response.status + ").";
  }

  load();
})();
