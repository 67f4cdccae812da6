// An instructor watches a learner's terminal: read-only, sized like the
// learner's, until the learner accepts a take-control request.
// The terminal measures its cells from the font: it opens once the lab's font is in.
(document.fonts ? document.fonts.load('14px "Lab Mono"') : Promise.resolve()).catch(function () {})
  .then(function () {
  "use strict";

  const box = document.getElementById("watch");
  const mode = document.getElementById("watch-mode");
  const status = document.getElementById("watch-status");
  const button = document.getElementById("control-button");
  const encoder = new TextEncoder();
  let socket = null, control = false, retry = 0;

  const term = new Terminal({fontSize: 14, scrollback: 5000, disableStdin: true, cursorBlink: false,
                             fontFamily: '"Lab Mono", monospace', lineHeight: 1.1,
                             theme: {background: "#11161f"}});
  term.open(box);
  term.onData(function (data) {
    if (control && socket && socket.readyState === WebSocket.OPEN) socket.send(encoder.encode(data));
  });

  function setControl(granted) {
    control = granted;
    term.options.disableStdin = !granted;
    term.options.cursorBlink = granted;
    box.dataset.control = granted ? "yes" : "no";
    mode.textContent = granted ? "you have control: your keystrokes go to the learner" : "read-only";
    mode.classList.toggle("in-control", granted);
    button.textContent = granted ? "Give control back" : "Ask to take control";
    if (granted) term.focus();
  }

  button.addEventListener("click", function () {
    if (!socket || socket.readyState !== WebSocket.OPEN) return;
    if (control) {
      socket.send(JSON.stringify({type: "control-release"}));
    } else {
      socket.send(JSON.stringify({type: "control-request"}));
      status.textContent = "Asked the learner; waiting for them to accept…";
    }
  });

  function connect() {
    socket = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + box.dataset.url);
    socket.binaryType = "arraybuffer";
    socket.onopen = function () { retry = 0; status.textContent = "watching live"; };
    socket.onmessage = function (message) {
      if (typeof message.data !== "string") { term.write(new Uint8Array(message.data)); return; }
      let event;
      try { event = JSON.parse(message.data); } catch (err) { return; }
      if (event.type === "size") term.resize(event.cols, event.rows);
      else if (event.type === "control") {
        setControl(event.granted);
        status.textContent = event.granted ? "The learner let you type." : "watching live";
      } else if (event.type === "error") status.textContent = event.message;
    };
    socket.onclose = function (close) {
      setControl(false);
      if (close.code === 4403) { status.textContent = "You cannot watch this machine."; return; }
      retry = Math.min(retry + 1, 5);
      status.textContent = "Connection dropped; reconnecting…";
      setTimeout(connect, 500 * Math.pow(2, retry));
    };
  }
  setControl(false);
  connect();
});
