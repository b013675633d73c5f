// The system page's Rollouts and bandit card: the candidate's share over time as a step chart, each
// bandit arm's share and posterior (mean and 90 % interval) over time; re-read from rollouts/data.json
// when a rollout changes or new bandit points are pushed.
// Deferred, and before live.js on the page: it starts once every script has run.
document.addEventListener("DOMContentLoaded", function () {
  const card = document.getElementById("rollouts");
  if (!card || !window.Plotly) return;
  let state = JSON.parse(document.getElementById("rollouts-state").textContent);
  const palette = ["#1565c0", "#2e7d32", "#ef6c00", "#6a1b9a", "#c62828", "#00838f", "#8d6e63", "#546e7a"];
  const kindColor = {started: "#1565c0", advanced: "#2e7d32", completed: "#2e7d32", rolled_back: "#c62828",
                     cancelled: "#8d6e63"};
  const layoutBase = {margin: {l: 48, r: 12, t: 10, b: 40}, legend: {orientation: "h", y: -0.3},
                      paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)"};
  const plotCfg = {displayModeBar: false, responsive: true};

  function empty(name, isEmpty) {
    const p = card.querySelector('[data-empty="' + name + '"]');
    if (p) p.hidden = !isEmpty;
  }
  function draw(id, traces, layout, isEmpty) {
    const div = document.getElementById(id);
    div.hidden = isEmpty;
    if (!isEmpty) Plotly.react(div, traces, Object.assign({}, layoutBase, layout), plotCfg);
  }
  function pct(share) { return Math.round(share * 1000) / 10 + " %"; }
  function text(id, value) { const el = document.getElementById(id); if (el) el.textContent = value; return el; }

  // Log scale: 1 %, 5 % and 20 % stay apart; a share of 0 (rolled back, cancelled) sits at its floor.
  const FLOOR = 0.5;
  function onAxis(share) { return Math.max(share * 100, FLOOR); }

  function renderRollout() {
    const r = state.rollouts[0];
    empty("rollout-chart", !r);
    if (!r) { draw("rollout-chart", [], {}, true); return; }
    const xs = r.events.map((e) => e.at), ys = r.events.map((e) => onAxis(e.share));
    if (r.state === "running") { xs.push(state.now); ys.push(onAxis(r.share)); }
    const traces = [
      {type: "scatter", mode: "lines", name: r.candidate, x: xs, y: ys, line: {shape: "hv", color: "#1565c0"},
       hoverinfo: "skip"},
      {type: "scatter", mode: "markers", name: "steps", x: r.events.map((e) => e.at), y: r.events.map((e) => onAxis(e.share)),
       marker: {size: 9, color: r.events.map((e) => kindColor[e.kind] || "#546e7a")},
       text: r.events.map((e) => pct(e.share) + ", " + e.what + " by " + e.by + ": " + e.reason),
       hovertemplate: "%{text}<extra></extra>"},
    ];
    const ticks = [FLOOR].concat(r.steps);
    draw("rollout-chart", traces, {showlegend: false, xaxis: {type: "date"},
                                   yaxis: {title: r.candidate + " share %", type: "log", range: [Math.log10(0.4), Math.log10(130)],
                                           tickvals: ticks, ticktext: ticks.map((t) => (t === FLOOR ? "0" : String(t)))}},
         false);
  }

  function renderList() {
    const ul = document.getElementById("rollout-list");
    if (!ul) return;
    ul.replaceChildren();
    const cls = {running: "warn", completed: "ok", rolled_back: "bad"};
    state.rollouts.forEach((r) => {
      const li = document.createElement("li");
      const title = document.createElement("strong");
      title.textContent = r.id + ": " + r.candidate + " over " + r.baseline;
      const badge = document.createElement("span");
      badge.className = "badge " + (cls[r.state] || "");
      badge.textContent = r.state_label;
      const info = document.createElement("span");
      info.className = "small muted";
      info.textContent = "steps " + r.steps.join(" → ") + " %, started by " + r.started_by;
      const details = document.createElement("details");
      details.className = "small";
      const summary = document.createElement("summary");
      summary.textContent = r.events.length + " step" + (r.events.length === 1 ? "" : "s");
      const table = document.createElement("table");
      table.className = "small";
      const head = table.createTHead().insertRow();
      ["When (UTC)", "What", "Share", "By", "Why"].forEach((h) => {
        const th = document.createElement("th"); th.textContent = h; head.appendChild(th);
      });
      const body = table.createTBody();
      r.events.forEach((e) => {
        const tr = body.insertRow();
        [e.at.replace("T", " ").slice(0, 19), e.what, pct(e.share), e.by, e.reason].forEach((v) => {
          tr.insertCell().textContent = v;
        });
      });
      details.append(summary, table);
      li.append(title, " ", badge, " ", info, details);
      ul.appendChild(li);
    });
  }

  function renderBandit() {
    const models = Object.keys(state.series).sort();
    const share = [], post = [];
    models.forEach((m, i) => {
      const s = state.series[m], color = palette[i % palette.length];
      share.push({type: "scatter", mode: "lines", name: m, x: s.share.map((p) => p[0]), y: s.share.map((p) => p[1]),
                  line: {color: color}});
      post.push({type: "scatter", mode: "lines", x: s.low.map((p) => p[0]), y: s.low.map((p) => p[1]),
                 line: {width: 0, color: color}, showlegend: false, hoverinfo: "skip", legendgroup: m});
      post.push({type: "scatter", mode: "lines", x: s.high.map((p) => p[0]), y: s.high.map((p) => p[1]), fill: "tonexty",
                 fillcolor: color + "33", line: {width: 0, color: color}, showlegend: false, hoverinfo: "skip",
                 legendgroup: m});
      post.push({type: "scatter", mode: "lines", name: m + " (mean, 90 % interval)", x: s.mean.map((p) => p[0]),
                 y: s.mean.map((p) => p[1]), line: {color: color}, legendgroup: m});
    });
    empty("bandit", !models.length);
    draw("bandit-share", share, {yaxis: {title: "share of traffic", range: [0, 1.02]}, xaxis: {type: "date"}},
         !models.length);
    draw("bandit-posterior", post, {yaxis: {title: "reward", range: [0, 1.02]}, xaxis: {type: "date"}},
         !models.length);
  }

  function renderText() {
    const run = state.running;
    const running = text("rollout-running", run ? run.candidate + " takes " + pct(run.share) + " of the traffic from " +
                                            run.baseline : "No rollout is running.");
    if (running && run) {
      const badge = document.createElement("span");
      badge.className = "badge warn"; badge.textContent = "running";
      running.prepend(badge, " ");
    }
    const next = text("rollout-next", run ? "Next: " + run.next.action + " — " + run.next.reason + "." : "");
    if (next) next.hidden = !run;
    const act = document.getElementById("rollout-act"), start = document.getElementById("rollout-start");
    if (act) act.hidden = !run;
    if (start) start.hidden = !!run;
    const id = document.getElementById("rollout-act-id");
    if (id && run) id.value = run.id;
    const body = card.querySelector("#bandit-arms tbody");
    if (body) {
      body.replaceChildren();
      state.bandit.arms.forEach((a) => {
        const tr = document.createElement("tr");
        [a.model, a.share.toFixed(3), a.mean.toFixed(3), a.low.toFixed(3) + " – " + a.high.toFixed(3),
         a.alpha.toFixed(1), a.beta.toFixed(1), String(a.pulls)].forEach((v) => {
          const td = document.createElement("td"); td.textContent = v; tr.appendChild(td);
        });
        body.appendChild(tr);
      });
    }
  }

  function render() { renderRollout(); renderBandit(); }

  let pending = null;
  function refresh() {
    if (pending) return;
    pending = setTimeout(() => {
      pending = null;
      fetch(card.dataset.url, {credentials: "same-origin", headers: {Accept: "application/json"}})
        .then((r) => (r.ok ? r.json() : Promise.reject(r.status)))
        .then((s) => { state = s; renderText(); renderList(); render(); })
        .catch(() => {});
    }, 200);
  }

  render();
  if (window.liveSocket && window.OVERSIGHT) {
    let opened = false;
    window.liveSocket(window.OVERSIGHT.socket, {
      badge: false,
      onopen: () => { if (opened) refresh(); opened = true; },
      onmessage: (m) => {
        const bandit = m.type === "metrics" && Object.keys(m.values || {}).some((k) => k.startsWith("bandit."));
        if (m.type === "rollout" || bandit) refresh();
      },
    });
  }
});
