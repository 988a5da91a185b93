// The upload page: one tap sends the photo, then the page asks for the answer until the stream wrote it.
// No inline script (the Content-Security-Policy forbids it); text is placed with textContent only.
"use strict";

(function () {
  const form = document.getElementById("upload-form");
  const input = document.getElementById("photo");
  const consent = document.getElementById("consent");
  const status = document.getElementById("status");
  const button = input.closest(".big-button");
  const answer = document.getElementById("answer");
  const ANSWER_DEADLINE_MS = 120000;
  const POLL_MS = 300;
  const POLL_FAST_FOR_MS = 8000;
  const byId = (id) => document.getElementById(id);

  function say(text, problem) {
    status.textContent = text;
    status.classList.toggle("problem", Boolean(problem));
  }

  function busy(on) {
    button.classList.toggle("busy", on);
    input.disabled = on;
  }

  async function messageOf(response) {
    try {
      const body = await response.json();
      if (body && body.message) return body.message;
    } catch (ignored) { /* not JSON */ }
    return "Something went wrong (" + response.status + "): please try again.";
  }

  function post(url, body, headers) {
    return fetch(url, {method: "POST", body: body, credentials: "same-origin",
                       headers: Object.assign({"X-CSRF-Token": form.dataset.csrf}, headers || {})});
  }

  // Locally the app takes the photo; on S3 it signs a presigned POST and the photo goes to the bucket.
  async function send(file) {
    if (form.dataset.presigned === "yes") {
      const signed = await post("/api/uploads/presign",
                                JSON.stringify({content_type: file.type, consent: consent.checked}),
                                {"Content-Type": "application/json"});
      if (!signed.ok) throw new Error(await messageOf(signed));
      const grant = await signed.json();
      const data = new FormData();
      for (const [name, value] of Object.entries(grant.fields)) data.append(name, value);
      data.append("file", file);  // S3 wants the file last
      const stored = await fetch(grant.url, {method: "POST", body: data});
      if (!stored.ok) {
        throw new Error(stored.status === 400 && file.size > Number(form.dataset.maxMb) * 1048576
          ? "This file is too large: photos up to " + form.dataset.maxMb + " MB."
          : "The photo could not be stored (" + stored.status + "): please try again.");
      }
      return grant;
    }
    const data = new FormData();
    data.append("consent", consent.checked ? "yes" : "no");
    data.append("photo", file);
    const response = await post("/api/uploads", data);
    if (!response.ok) throw new Error(await messageOf(response));
    return response.json();
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function show(view) {
    answer.hidden = false;
    answer.classList.toggle("rejected", view.status === "rejected");
    byId("answer-title").textContent = view.title || "";
    byId("answer-message").textContent = view.message || "";
    const photo = byId("answer-photo");
    photo.hidden = true;  // shown once loaded (a photo deleted after its retention stays hidden)
    if (view.photo) photo.src = view.photo;
    const top = byId("answer-top");
    clear(top);
    for (const choice of (view.top || []).slice(1)) {
      const item = document.createElement("li");
      item.textContent = choice.name + " (" + choice.percent + ")";
      top.appendChild(item);
    }
    byId("answer-top-box").hidden = !top.children.length;
    const neighbours = byId("answer-neighbours");
    clear(neighbours);
    for (const known of view.neighbours || []) {
      const item = document.createElement("li");
      const img = document.createElement("img");
      img.src = known.thumbnail;
      img.alt = known.label;
      img.width = 96;
      img.height = 96;
      const label = document.createElement("span");
      label.textContent = known.label;
      item.append(img, label);
      neighbours.appendChild(item);
    }
    byId("answer-neighbours-box").hidden = !neighbours.children.length;
    byId("answer-map-box").hidden = !view.map;
    if (view.map) byId("answer-map").src = view.map;
    showVote(view);
    const meta = [];
    if (view.seconds !== undefined) meta.push("answered " + view.seconds + " s after the upload");
    if (view.model) meta.push("model " + view.model);
    byId("answer-meta").textContent = meta.join(" · ");
  }

  // "Is it right?": yes, or "no, it's …" with the known fruits to choose from (or a new name).
  const vote = byId("vote");
  const voteName = byId("vote-name");

  function showVote(view) {
    const asks = view.status === "answered" && view.vote && view.vote.asks;
    vote.hidden = !asks;
    if (!asks) return;
    const agree = view.vote.agree;
    byId("vote-question").textContent = agree ? "Is it right?" : "Do you know which fruit it is?";
    byId("vote-yes").hidden = !agree;
    byId("vote-no").hidden = !agree;
    byId("vote-other").hidden = agree;
    byId("vote-status").textContent = "";
    const names = byId("vote-names");
    clear(names);
    for (const name of view.vote.names) {
      const option = document.createElement("option");
      option.value = name;
      names.appendChild(option);
    }
  }

  async function sendVote(body) {
    const voteStatus = byId("vote-status");
    voteStatus.textContent = "Sending…";
    const response = await post("/api/answers/" + answer.dataset.uploadId + "/vote", JSON.stringify(body),
                                {"Content-Type": "application/json"});
    voteStatus.textContent = response.ok ? (await response.json()).message : await messageOf(response);
    voteStatus.classList.toggle("problem", !response.ok);
  }

  byId("vote-yes").addEventListener("click", () => sendVote({agrees: true}));
  byId("vote-no").addEventListener("click", function () {
    byId("vote-other").hidden = false;
    voteName.focus();
  });
  vote.addEventListener("submit", function (event) {
    event.preventDefault();
    if (voteName.value.trim()) sendVote({label: voteName.value});
  });

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // Poll every 0.3 s while an answer is due (the stream answers within seconds), then back off to 2 s.
  async function waitForAnswer(uploadId) {
    const started = Date.now();
    let delay = POLL_MS;
    answer.dataset.uploadId = uploadId;
    while (Date.now() - started < ANSWER_DEADLINE_MS) {
      let response;
      try {
        response = await fetch("/api/answers/" + uploadId, {credentials: "same-origin"});
      } catch (network) {
        response = null;
      }
      if (response && response.status === 404) {
        say("There is no such photo here.", true);
        return;
      }
      if (response && response.ok) {
        const view = await response.json();
        if (view.status !== "pending") {
          show(view);
          say(view.status === "rejected" ? "" : "Here is what the model says.");
          return;
        }
        say(view.title);
      }
      await sleep(delay);
      if (Date.now() - started > POLL_FAST_FOR_MS) delay = Math.min(2000, delay * 1.5);
    }
    say("No answer yet: keep this page's address and come back in a minute.", true);
  }

  input.addEventListener("change", async function () {
    const file = input.files && input.files[0];
    if (!file) return;
    busy(true);
    answer.hidden = true;
    say("Sending your photo…");
    try {
      const sent = await send(file);
      history.pushState({uploadId: sent.upload_id}, "", sent.page);
      say("Looking at your photo…");
      await waitForAnswer(sent.upload_id);
    } catch (problem) {
      say(problem.message || "The photo could not be sent: please try again.", true);
    } finally {
      input.value = "";
      busy(false);
    }
  });

  byId("answer-photo").addEventListener("load", function () { this.hidden = false; });

  if (answer.dataset.uploadId) {
    say("Looking at your photo…");
    waitForAnswer(answer.dataset.uploadId);
  }
})();
