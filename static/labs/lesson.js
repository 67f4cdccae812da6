// Lesson page: start the learner's lab machine, show progress, attach the
// terminal (xterm.js) and keep step states live from the lesson socket.
(function () {
  "use strict";

  const lab = document.getElementById("lab");
  if (!lab) return;

  const START_DEADLINE_MS = 90000;
  const slug = lab.dataset.slug;
  const statusBox = document.getElementById("lab-status");
  const statusText = document.getElementById("status-text");
  const progress = statusBox.querySelector(".progress");
  const bar = document.getElementById("progress-bar");
  const startButton = document.getElementById("start-button");
  const retryButton = document.getElementById("retry-button");
  const checkButton = document.getElementById("check-button");
  const termBox = document.getElementById("terminal");
  const csrf = document.querySelector("input[name=csrfmiddlewaretoken]").value;
  const wsBase = (location.protocol === "https:" ? "wss://" : "ws://") + location.host;

  let nodeId = lab.dataset.node || "";
  let deadline = null;
  let term = null, fit = null, termSocket = null, termRetry = 0, termTimer = null;
  let lessonSocket = null, lessonRetry = 0;

  function setState(state, text) {
    lab.dataset.state = state;
    statusBox.classList.toggle("error", state === "failed");
    if (text !== undefined) statusText.textContent = text;
    startButton.hidden = state !== "idle";
    retryButton.hidden = state !== "failed";
    progress.hidden = state !== "starting";
    checkButton.disabled = !(state === "ready" || state === "reconnecting");
    if (state !== "starting" && deadline) { clearTimeout(deadline); deadline = null; }
  }

  function fail(reason) {
    setState("failed", reason || "Your lab machine could not start.");
  }

  // ---- starting -------------------------------------------------------
  // Never an endless spinner: give up after START_DEADLINE_MS and offer Retry.
  function armDeadline() {
    if (deadline) clearTimeout(deadline);
    deadline = setTimeout(function () {
      deadline = null;
      fail("Your lab machine did not come up within " + START_DEADLINE_MS / 1000 +
           " seconds. Try again; if it keeps failing, tell the lab's operator.");
    }, START_DEADLINE_MS);
  }

  async function start() {
    setState("starting", "Starting your lab machine…");
    bar.style.width = "2%";
    armDeadline();
    let body;
    try {
      const response = await fetch(lab.dataset.startUrl, {
        method: "POST", headers: {"X-CSRFToken": csrf}, credentials: "same-origin"});
      body = await response.json();
    } catch (err) {
      fail("Could not reach the server to start your machine (" + err + ").");
      return;
    }
    if (!body.ok) { fail(body.error); return; }
    onSession(body);
  }

  function onSession(event) {
    if (event.state === "ready" && event.node) {
      nodeId = String(event.node);
      if (lab.dataset.state !== "ready") attachTerminal();
    } else if (event.state === "failed") {
      fail("Your lab machine could not start: " + (event.error || "unknown reason"));
    } else if (event.state === "stopped") {
      setState("idle", "Your lab machine was stopped. Start it again to continue.");
    }
  }

  // Session news from the socket (also sent once on every (re)connect).
  function onSessionEvent(event) {
    const now = lab.dataset.state;
    if (event.state === "ready") {
      if (now === "starting" || now === "failed" || now === "idle") onSession(event);
    } else if (event.state === "failed") {
      if (now === "starting") onSession(event);
    } else if (event.state === "stopped") {
      if (now !== "idle") onSession(event);
    } else if (event.state === "starting" && now === "idle") {
      // A start is under way (say the page was reloaded during it): wait for it.
      setState("starting", "Starting your lab machine…");
      armDeadline();
    }
  }

  function onProgress(event) {
    if (lab.dataset.state !== "starting") return;
    bar.style.width = Math.max(2, Math.min(100, event.progress)) + "%";
    if (event.message) statusText.textContent = "Starting " + event.name + ": " + event.message;
  }

  startButton.addEventListener("click", start);
  retryButton.addEventListener("click", start);

  // ---- steps ----------------------------------------------------------
  function onStep(event) {
    const el = document.querySelector('.step[data-step="' + event.step + '"]');
    if (!el) return;
    el.dataset.state = event.state;
    el.querySelector(".step-message").textContent = event.state === "done" ? "" : (event.message || "");
  }

  checkButton.addEventListener("click", function () {
    if (lessonSocket && lessonSocket.readyState === WebSocket.OPEN) {
      lessonSocket.send(JSON.stringify({type: "check"}));
    } else {
      fetch(lab.dataset.checkUrl, {method: "POST", headers: {"X-CSRFToken": csrf},
                                   credentials: "same-origin"});
    }
  });

  // ---- lesson events ----------------------------------------------------
  function connectLesson() {
    lessonSocket = new WebSocket(wsBase + "/ws/lessons/" + slug + "/");
    lessonSocket.onopen = function () { lessonRetry = 0; };
    lessonSocket.onmessage = function (message) {
      let event;
      try { event = JSON.parse(message.data); } catch (err) { return; }
      if (event.type === "progress") onProgress(event);
      else if (event.type === "session") onSessionEvent(event);
      else if (event.type === "step") onStep(event);
      else if (event.type === "error") statusText.textContent = event.message;
    };
    lessonSocket.onclose = function (close) {
      if (close.code === 4403 || close.code === 4404) return;
      lessonRetry = Math.min(lessonRetry + 1, 6);
      setTimeout(connectLesson, 500 * Math.pow(2, lessonRetry));
    };
  }

  // ---- terminal -----------------------------------------------------------
  function ensureTerm() {
    if (term) return;
    term = new Terminal({cursorBlink: true, convertEol: false, fontSize: 14, scrollback: 5000,
                         fontFamily: 'ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace',
                         theme: {background: "#11161f"}});
    fit = new FitAddon.FitAddon();
    term.loadAddon(fit);
    term.open(termBox);
    const encoder = new TextEncoder();
    term.onData(function (data) {
      if (termSocket && termSocket.readyState === WebSocket.OPEN) termSocket.send(encoder.encode(data));
    });
    term.onBinary(function (data) {
      if (!termSocket || termSocket.readyState !== WebSocket.OPEN) return;
      const bytes = new Uint8Array(data.length);
      for (let i = 0; i < data.length; i++) bytes[i] = data.charCodeAt(i) & 255;
      termSocket.send(bytes);
    });
    term.onResize(function (size) {
      if (termSocket && termSocket.readyState === WebSocket.OPEN) {
        termSocket.send(JSON.stringify({type: "resize", cols: size.cols, rows: size.rows}));
      }
    });
    window.addEventListener("resize", function () { try { fit.fit(); } catch (err) { /* hidden */ } });
  }

  function attachTerminal() {
    setState("ready");
    ensureTerm();
    fit.fit();
    if (termTimer) { clearTimeout(termTimer); termTimer = null; }
    const url = wsBase + "/ws/nodes/" + nodeId + "/terminal/?cols=" + term.cols + "&rows=" + term.rows;
    const socket = new WebSocket(url);
    socket.binaryType = "arraybuffer";
    termSocket = socket;
    socket.onopen = function () {
      termRetry = 0;
      setState("ready");
      fit.fit();
      term.focus();
    };
    socket.onmessage = function (message) {
      if (typeof message.data === "string") {
        try {
          const event = JSON.parse(message.data);
          if (event.type === "error") statusText.textContent = event.message;
        } catch (err) { /* ignore */ }
        return;
      }
      term.write(new Uint8Array(message.data));
    };
    socket.onclose = function (close) {
      if (socket !== termSocket) return;
      if (close.code === 4403) { fail("This lab machine is not yours."); return; }
      if (close.code === 4410) {
        fail("Your lab machine is gone. Start a new one to continue.");
        return;
      }
      termRetry = Math.min(termRetry + 1, 6);
      const wait = 500 * Math.pow(2, termRetry);
      setState("reconnecting", "Connection to your terminal dropped; reconnecting in " +
               Math.round(wait / 1000) + " s…");
      termTimer = setTimeout(attachTerminal, wait);
    };
  }

  connectLesson();
  if (nodeId) attachTerminal(); else setState("idle");
})();
