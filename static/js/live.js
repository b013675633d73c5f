// A WebSocket that reconnects with back-off and tells the page when it (re)opened,
// so the page can resynchronise from stored history.
window.liveSocket = function (path, handlers) {
  let delay = 500;
  // The page's own socket shows its state in #live; a page-wide one (the stop banner's) says badge: false.
  const badge = handlers.badge === false ? null : document.getElementById("live");
  function setBadge(text, cls) { if (badge) { badge.textContent = text; badge.className = "badge " + cls; } }
  function open() {
    const proto = location.protocol === "https:" ? "wss://" : "ws://";
    const ws = new WebSocket(proto + location.host + path);
    ws.onopen = () => { delay = 500; setBadge("live", "ok"); handlers.onopen && handlers.onopen(); };
    ws.onmessage = (ev) => {
      let msg; try { msg = JSON.parse(ev.data); } catch (e) { return; }
      const list = msg.type === "batch" ? msg.messages : [msg];
      list.forEach((m) => handlers.onmessage(m));
    };
    ws.onclose = (ev) => {
      if (ev.code === 4403) { setBadge("not allowed", "bad"); return; }
      setBadge("reconnecting…", "warn");
      setTimeout(open, delay); delay = Math.min(delay * 2, 10000);
    };
  }
  open();
};
