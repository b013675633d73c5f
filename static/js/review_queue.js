// The review queue list: `n` claims the next item; the total, the past-due count and the oldest
// item's age follow the queue live. The monitoring job pushes each system's depth and oldest age
// over /ws/overview/ (`queue` messages): a list filtered by system only shows those figures as
// they come; any push (and a reconnect) also asks the server for this list's own figures
// (`?part=totals` with the same filters), which carry the past-due count and any other filter.
// The server counts up to a cap ("10000+"); past it, a pushed depth is the exact figure.
(function () {
  const box = document.getElementById("queue-totals");
  const totalEl = document.getElementById("queue-total");
  const overdueEl = document.getElementById("queue-overdue");
  const oldestEl = document.getElementById("queue-oldest");
  const refresh = document.getElementById("queue-refresh");
  const onlySystem = box.dataset.onlySystem === "true";
  const system = box.dataset.system;
  const shownTotal = box.dataset.total;
  const depths = {};  // system -> {depth, oldestAt (ms since epoch, or null)}
  let oldestAt = box.dataset.oldestAge === "" ? null : Date.now() - Number(box.dataset.oldestAge) * 1000;
  let asking = null;

  // On a phone the filters fold away (the rows come first) unless some are applied or wrong.
  const filterBox = document.getElementById("queue-filter-box");
  if (window.matchMedia("(max-width: 700px)").matches && filterBox.dataset.active !== "true"
      && !filterBox.querySelector(".errorlist")) {
    filterBox.open = false;
  }

  function age(ms) {
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 120) return s + " s";
    if (s < 7200) return Math.floor(s / 60) + " min " + (s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  }

  function showOldest() {
    oldestEl.textContent = oldestAt === null ? "—" : age(Date.now() - oldestAt);
  }

  function showTotal(total) {
    totalEl.textContent = total;
    box.dataset.total = total;
    // The rows are the page as loaded; say when the queue moved on, without reordering under the cursor.
    if (total !== shownTotal) {
      refresh.href = location.pathname + location.search;
      refresh.hidden = false;
    }
  }

  function showOverdue(n) {
    overdueEl.textContent = n + " past due";
    overdueEl.classList.toggle("overdue", n !== "0");
  }

  function fromPushes() {
    const mine = Object.entries(depths).filter(([slug]) => !system || slug === system).map(([, v]) => v);
    if (!mine.length) return;
    showTotal(String(mine.reduce((sum, v) => sum + v.depth, 0)));
    const ages = mine.map((v) => v.oldestAt).filter((t) => t !== null);
    oldestAt = ages.length ? Math.min(...ages) : null;
    showOldest();
  }

  function askServer() {
    if (asking) return;  // one request at a time; a batch of pushes asks once
    asking = setTimeout(() => {
      fetch(box.dataset.totalsUrl, {headers: {Accept: "application/json"}, credentials: "same-origin"})
        .then((r) => (r.ok ? r.json() : null))
        .then((t) => {
          if (!t) return;
          // Over the cap, a list filtered by system only keeps the pushed (exact) depth.
          if (!(t.total_more && onlySystem && Object.keys(depths).length)) {
            showTotal(t.total_more ? t.total - 1 + "+" : String(t.total));
          }
          showOverdue(t.overdue_more ? t.overdue - 1 + "+" : String(t.overdue));
          oldestAt = t.oldest_age_s === null ? null : Date.now() - t.oldest_age_s * 1000;
          showOldest();
        })
        .catch(() => {})
        .finally(() => { asking = null; });
    }, 50);
  }

  window.liveSocket("/ws/overview/", {
    onopen: askServer,
    onmessage: (m) => {
      if (m.type !== "queue") return;
      depths[m.system] = {depth: m.depth, oldestAt: m.oldest_age_s == null ? null : Date.now() - m.oldest_age_s * 1000};
      if (onlySystem) fromPushes();
      askServer();
    },
  });
  setInterval(showOldest, 1000);
  showOldest();

  document.addEventListener("keydown", (e) => {
    // Plain keys only: Ctrl+N (new window) and the like stay the browser's.
    if (e.ctrlKey || e.metaKey || e.altKey || e.repeat || e.isComposing) return;
    if (e.target.closest("input, textarea, select, [contenteditable]")) return;
    if (e.key === "n") document.getElementById("next-form").submit();
  });
})();
