(function () {
  const cfg = window.OVERSIGHT;
  let state = JSON.parse(document.getElementById("initial-state").textContent);
  const colors = {auto: "#2e7d32", human: "#1565c0", fallback: "#8d6e63", killed: "#c62828", breaker_open: "#ef6c00"};

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([k, v]) => e.setAttribute(k, v));
    if (text !== undefined) e.textContent = text;   // textContent: user text is never parsed as HTML
    return e;
  }

  function killButton(scope, system, engaged, label) {
    const b = el("button", {type: "button", class: engaged ? "danger" : "", "data-scope": scope,
                            "data-system": system || "", "data-engaged": engaged ? "true" : "false"}, label);
    b.addEventListener("click", () => openDialog(scope, system, engaged));
    return b;
  }

  function openDialog(scope, system, engaged) {
    const what = scope === "global" ? "every system" : "system " + system;
    document.getElementById("kill-scope").value = scope;
    document.getElementById("kill-system").value = system || "";
    document.getElementById("kill-engaged").value = engaged ? "true" : "false";
    document.getElementById("kill-title").textContent = engaged ? "Engage kill switch" : "Release kill switch";
    document.getElementById("kill-explain").textContent = engaged
      ? "From the very next decision, " + what + " answers with its fallback output (route killed)."
      : "Decisions of " + what + " go through the gate again from the very next one.";
    const sys = state.systems.find((x) => x.slug === system);
    const fourEyes = !engaged && (scope === "global" || (sys && sys.level === 1));
    if (fourEyes) document.getElementById("kill-explain").textContent +=
      " Two admins: this asks for the release, and the switch stays engaged until another admin approves it.";
    const reason = document.getElementById("kill-reason");
    reason.value = ""; reason.required = engaged || fourEyes;
    document.getElementById("kill-confirm").textContent = engaged ? "Engage" : fourEyes ? "Ask a second admin" : "Release";
    document.getElementById("kill-dialog").showModal();
    reason.focus();
  }

  function renderGlobal() {
    const g = state.global;
    const badge = document.getElementById("global-state");
    badge.textContent = g.engaged ? "ENGAGED" : "off";
    badge.className = "badge " + (g.engaged ? "bad" : "ok");
    document.getElementById("global-reason").textContent = g.engaged ? g.reason + (g.by ? " — " + g.by : "") : "";
    const box = document.getElementById("global-actions");
    if (box) {
      box.replaceChildren(g.engaged ? killButton("global", null, false, "Release global kill switch")
                                    : killButton("global", null, true, "Stop everything"));
    }
  }

  function renderSystems() {
    const body = document.querySelector("#systems tbody");
    body.replaceChildren();
    document.getElementById("no-systems").hidden = state.systems.length > 0;
    state.systems.forEach((s) => {
      const tr = el("tr", {"data-system": s.slug});
      const name = el("td");
      const link = el("a", {href: "/monitor/" + encodeURIComponent(s.slug) + "/", class: "system-link"});
      link.append(el("strong", {}, s.slug));
      name.append(link, el("div", {class: "muted small"}, s.name));
      tr.append(name, el("td", {"data-label": "Level"}, String(s.level)));
      const st = el("td", {class: "state", "data-label": "State"});
      const killed = s.killed || state.global.engaged;
      st.append(el("span", {class: "badge " + (killed ? "bad" : "ok")}, killed ? "KILLED" : "running"));
      if (s.killed) st.append(el("div", {class: "muted small"}, s.kill_reason + (s.kill_by ? " — " + s.kill_by : "")));
      if (s.breaker && s.breaker !== "closed") {
        st.append(" ", el("span", {class: "badge " + (s.breaker === "open" ? "bad" : "warn")},
                          s.breaker === "open" ? "breaker open" : "breaker half-open"),
                  el("div", {class: "muted small"}, s.breaker_reason));
      }
      tr.append(st);
      const age = s.oldest_age_s == null ? "" : " (oldest " + Math.round(s.oldest_age_s) + " s)";
      tr.append(el("td", {class: "queue", "data-label": "Queue"}, s.queue_depth + age));
      tr.append(el("td", {class: "routes", "data-label": "Last 10 min (auto · human · fallback · killed · breaker)"},
                    ["auto", "human", "fallback", "killed", "breaker_open"].map((r) => s.routes[r] || 0).join(" · ")));
      const drift = el("td", {class: "drift", "data-label": "Worst drift"});
      if (s.worst_drift) {
        const w = s.worst_drift;
        drift.append(el("span", {class: "badge " + (w.drifted ? "bad" : w.drifted === false ? "ok" : "muted")},
                        w.drifted ? "drift" : w.drifted === false ? "calm" : "n/a"),
                     " " + w.feature + (w.severity == null ? "" : " · " + Number(w.severity).toFixed(2)));
      } else drift.append(el("span", {class: "muted small"}, "no results"));
      tr.append(drift);
      const alert = el("td", {class: "alert", "data-label": "Newest open alert"});
      if (s.alert) alert.append(el("span", {class: "badge bad"}, s.alert.kind), el("div", {class: "small"}, s.alert.message));
      else alert.append(el("span", {class: "muted small"}, "none"));
      tr.append(alert);
      if (cfg.isAdmin) {
        const td = el("td");
        td.append(s.killed ? killButton("system", s.slug, false, "Release") : killButton("system", s.slug, true, "Stop " + s.slug));
        tr.append(td);
      }
      body.append(tr);
    });
  }

  function renderChart() {
    if (!window.Plotly) return;
    const byRoute = {};
    state.series.forEach((p) => {
      const route = p.name.replace("decisions.", "");
      (byRoute[route] = byRoute[route] || {});
      byRoute[route][p.t] = (byRoute[route][p.t] || 0) + p.value;
    });
    // The bar of the current minute (or hour) is still filling: lighter, so it does not read as a drop.
    const current = new Date(state.now);
    if (state.bucket === "hour") current.setMinutes(0, 0, 0); else current.setSeconds(0, 0);
    const traces = state.routes.filter((r) => byRoute[r]).map((r) => {
      const ts = Object.keys(byRoute[r]).sort();
      return {type: "bar", name: r, x: ts.map((t) => new Date(t)), y: ts.map((t) => byRoute[r][t]),
              marker: {color: colors[r], opacity: ts.map((t) => (new Date(t) >= current ? 0.35 : 1))}};
    });
    const per = state.bucket === "hour" ? "hour" : "min";
    document.getElementById("chart-title").textContent = "Decisions per " + (per === "hour" ? "hour" : "minute") + ", by route";
    const end = new Date(state.now);
    const spans = {"15m": 15 * 60e3, "1h": 3600e3, "24h": 24 * 3600e3, "7d": 7 * 24 * 3600e3};
    const start = new Date(end - (spans[state.range] || 3600e3));
    Plotly.react("chart", traces, {barmode: "stack", margin: {t: 10, r: 10, b: 60, l: 40}, height: 300,
      xaxis: {type: "date", range: [start, end]}, yaxis: {title: {text: "decisions / " + per}, rangemode: "tozero"},
      legend: {orientation: "h", y: -0.3}}, {displayModeBar: false, responsive: true});
  }

  function releaseForm(r, action, label, cls) {
    const form = el("form", {method: "post", class: "inline",
                             action: "/killswitch/releases/" + encodeURIComponent(r.id) + "/" + action + "/"});
    form.append(el("input", {type: "hidden", name: "csrfmiddlewaretoken", value: cfg.csrf}),
                el("button", {type: "submit", class: cls, "aria-label": label + " " + r.id}, label));
    return form;
  }

  function renderReleases() {
    const list = document.getElementById("release-list");
    const releases = state.releases || [];
    document.getElementById("releases").hidden = !releases.length;
    list.replaceChildren();
    releases.forEach((r) => {
      const what = r.scope === "global" ? "the global kill switch" :
        (r.scope === "model" ? "model " + r.model + " of " + r.system : "system " + r.system);
      const li = el("li", {"data-release": r.id});
      li.append(el("strong", {}, "Release " + what), " — asked by " + r.requested_by + ": " + r.reason + " ",
                el("span", {class: "muted small"}, new Date(r.requested_at).toLocaleString() + " "));
      if (cfg.isAdmin && r.requested_by === cfg.user) {
        li.append(el("span", {class: "muted small"}, "waiting for another admin "),
                  releaseForm(r, "withdraw", "Withdraw", ""));
      } else if (cfg.isAdmin) {
        li.append(releaseForm(r, "approve", "Approve release", "danger"));
      }
      list.append(li);
    });
  }

  function render() { renderGlobal(); renderReleases(); renderSystems(); renderChart(); }

  let pending = null;
  function resync() {
    if (pending) return;
    pending = setTimeout(() => {
      fetch(cfg.dataUrl + "?range=" + encodeURIComponent(state.range), {credentials: "same-origin"}).then((r) => r.ok ? r.json() : null)
        .then((s) => { pending = null; if (s) { state = s; render(); } })
        .catch(() => { pending = null; });
    }, 50);
  }

  function apply(m) {
    if (m.type === "killswitch") {
      if (m.scope === "global") { state.global = {engaged: m.engaged, reason: m.reason, by: m.by}; }
      else if (m.scope === "system") {
        const s = state.systems.find((x) => x.slug === m.system);
        if (s) { s.killed = m.engaged; s.kill_reason = m.reason; s.kill_by = m.by; }
      }
      renderGlobal(); renderSystems(); resync();
    } else if (m.type === "metric" && state.bucket !== "minute") {
      resync();   // pushed points are per minute: hourly bars are re-read
    } else if (m.type === "metric") {
      const i = state.series.findIndex((p) => p.system === m.system && p.name === m.name && p.t === m.t);
      if (i >= 0) state.series[i].value = m.value; else state.series.push(m);
      renderChart(); resync();
    } else if (m.type === "queue") {
      const s = state.systems.find((x) => x.slug === m.system);
      if (s) { s.queue_depth = m.depth; s.oldest_age_s = m.oldest_age_s; renderSystems(); }
    } else if (["policy", "system", "drift", "alert", "release_request", "breaker", "drill", "mitigation"].includes(m.type)) {
      resync();
    }
  }

  document.querySelectorAll("[data-range]").forEach((b) => b.addEventListener("click", () => {
    state.range = b.dataset.range;
    document.querySelectorAll("[data-range]").forEach((x) => x.setAttribute("aria-pressed", String(x === b)));
    const url = new URL(location.href); url.searchParams.set("range", state.range); history.replaceState(null, "", url);
    resync();
  }));

  const dialog = document.getElementById("kill-dialog");
  if (dialog) document.getElementById("kill-cancel").addEventListener("click", () => dialog.close());
  render();
  window.addEventListener("load", renderChart);
  window.liveSocket("/ws/overview/", {onopen: resync, onmessage: apply});
})();
