// /ops: the stream's numbers over the last hour, fetched again every few seconds (no meta refresh).
"use strict";

(function () {
  const REFRESH_MS = 5000;
  const status = document.getElementById("ops-status");

  function format(value, unit) {
    if (value === null || value === undefined) return "–";
    if (unit === "%") return (Math.round(value * 1000) / 10) + "%";
    if (unit === "s") return value.toFixed(2) + " s";
    return String(value);
  }

  function list(id, entries) {
    const target = document.getElementById(id);
    while (target.firstChild) target.removeChild(target.firstChild);
    for (const text of entries) {
      const item = document.createElement("li");
      item.textContent = text;
      target.appendChild(item);
    }
    if (!entries.length) {
      const item = document.createElement("li");
      item.textContent = "none";
      target.appendChild(item);
    }
  }

  function show(stats) {
    for (const cell of document.querySelectorAll("[data-key]")) {
      cell.textContent = format(stats[cell.dataset.key], cell.dataset.unit);
    }
    list("ops-error_reasons", Object.entries(stats.error_reasons || {}).map(([k, v]) => k + ": " + v));
    list("ops-class_mix", Object.entries(stats.class_mix || {}).map(([k, v]) => k + ": " + v));
    list("ops-model_swaps", (stats.model_swaps || []).map(
      (s) => "v" + s.from_version + " → v" + s.to_version + " at " + new Date(s.at * 1000).toLocaleTimeString()));
    status.textContent = "Updated " + new Date(stats.generated_at * 1000).toLocaleTimeString();
    status.classList.remove("problem");
  }

  async function refresh() {
    try {
      const response = await fetch("/api/ops", {credentials: "same-origin"});
      const body = await response.json();
      if (!response.ok) throw new Error(body.message || response.status);
      show(body);
    } catch (problem) {
      status.textContent = "No numbers: " + problem.message;
      status.classList.add("problem");
    }
    setTimeout(refresh, REFRESH_MS);
  }

  refresh();
})();
