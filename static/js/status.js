// The stop banner on every page, kept current by /ws/status/: what is stopped (the global kill
// switch, systems stopped by their own switch, the stopped models of the system the page is
// about), rows marked with data-stop-system, and actions a stop refuses (a form with
// data-blocked-src asks the server again which of its actions are refused now: the rule is the
// server's). User text only ever goes in through textContent.
(function () {
  const box = document.getElementById("stop-status");
  if (!box || !window.liveSocket) return;
  let epoch = Number(box.dataset.epoch || 0);
  const pageSystem = box.dataset.pageSystem || "";

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([k, v]) => e.setAttribute(k, v));
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // "<strong>lead</strong> middle — “reason” · by who · since when. tail"
  function line(attrs, lead, middle, flip, tail) {
    const li = el("li", attrs);
    li.append(el("strong", {}, lead), " " + middle + " — ", el("q", {}, flip.reason));
    if (flip.by) li.append(" · by " + flip.by);
    if (flip.since) li.append(" · since ", el("time", {datetime: flip.since}, flip.since_text));
    li.append("." + (tail ? " " + tail : ""));
    return li;
  }

  function renderBanner(m) {
    const items = [];
    if (m.global) {
      items.push(line({"data-stop": "global"}, "Everything is stopped:", "the global kill switch is engaged", m.global,
                      "Every system answers with its fallback output."));
    }
    m.systems.forEach((s) => {
      if (s.killed_reason === null) return;
      items.push(line({"data-stop": "system", "data-system": s.slug}, s.name + " (" + s.slug + ") is stopped:",
                      "its kill switch is engaged",
                      {reason: s.killed_reason, by: s.killed_by, since: s.killed_since, since_text: s.killed_since_text}));
    });
    m.systems.forEach((s) => {
      if (!s.breaker || s.breaker === "closed") return;
      const li = el("li", {"data-stop": "breaker", "data-system": s.slug});
      li.append(el("strong", {}, s.name + " (" + s.slug + "): circuit breaker " + (s.breaker === "open" ? "open" : "half-open")),
                " — ", el("q", {}, s.breaker_reason),
                ". " + (s.breaker === "open" ? "Every decision gets the fallback."
                                             : "A canary share goes to the model; the rest gets the fallback."));
      items.push(li);
    });
    const mine = m.systems.find((s) => s.slug === pageSystem);
    if (mine) {
      Object.keys(mine.models_killed).sort().forEach((model) => {
        items.push(line({"data-stop": "model", "data-model": model},
                        "Model " + model + " of " + pageSystem + " is stopped:", "left out of the answers",
                        mine.models_killed[model]));
      });
    }
    const wasShown = box.querySelector(".stop-banner[role=alert]") !== null;
    if (items.length) {
      const section = el("section", {class: "stop-banner", role: "alert", "aria-labelledby": "stop-title"});
      const list = el("ul");
      list.append(...items);
      section.append(el("h2", {id: "stop-title"}, "Stopped by a kill switch or a circuit breaker"), list);
      box.replaceChildren(section);
    } else if (wasShown) {
      box.replaceChildren(el("p", {class: "stop-banner ok", role: "status"},
                             "Nothing is stopped now."));
    }
  }

  function markSystems(m) {
    const stopped = m.stopped || {};
    document.querySelectorAll("[data-stop-system]").forEach((row) => {
      const why = stopped[row.dataset.stopSystem];
      const models = row.querySelector("[data-models-stopped]");
      if (models) {
        const s = m.systems.find((x) => x.slug === row.dataset.stopSystem);
        models.textContent = s ? s.models_line : "";
      }
      row.classList.toggle("stopped", Boolean(why));
      const mark = row.querySelector("[data-stop-mark]");
      if (mark) { mark.hidden = !why; mark.title = why || ""; }
      const running = row.querySelector("[data-run-mark]");
      if (running) running.hidden = Boolean(why);
      const text = row.querySelector("[data-stop-why]");
      if (text) text.textContent = why || "";
    });
  }

  function applyBlocked(form, blocked) {
    form.querySelectorAll("[data-blocked-action]").forEach((button) => {
      const action = button.dataset.blockedAction;
      const why = blocked[action];
      const note = form.querySelector('[data-blocked-reason="' + action + '"]');
      button.disabled = Boolean(why);
      if (note) {
        note.textContent = why || "";
        note.hidden = !why;
        if (why) button.setAttribute("aria-describedby", note.id); else button.removeAttribute("aria-describedby");
      }
    });
  }

  function refreshActions() {
    document.querySelectorAll("[data-blocked-src]").forEach((form) => {
      fetch(form.dataset.blockedSrc, {credentials: "same-origin", headers: {Accept: "application/json"}})
        .then((r) => (r.ok ? r.json() : null))
        .then((body) => { if (body) applyBlocked(form, body.blocked || {}); })
        .catch(() => {});
    });
  }

  window.liveSocket("/ws/status/", {
    badge: false,
    onopen: () => { box.dataset.live = "open"; },
    onmessage: (m) => {
      if (m.type !== "status" || m.epoch <= epoch) return;  // older than what the page shows
      epoch = m.epoch;
      renderBanner(m);
      markSystems(m);
      refreshActions();
      document.dispatchEvent(new CustomEvent("oversight:status", {detail: m}));
    },
  });
})();
