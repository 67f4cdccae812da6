// Lesson page: start the learner's lab machines, show progress, attach a
// terminal (xterm.js) per machine in tabs, keep step states, hints and
// published ports live from the lesson socket, make the commands in the
// step text clickable, and answer quiz steps.
(function () {
  "use strict";

  const START_DEADLINE_MS = 90000;
  // ```sh (bash, shell, console) blocks are commands: they get Run and Copy.
  // Other blocks (```text, ```dockerfile, plain ```) only get Copy.
  const COMMAND_LANGS = /\blanguage-(sh|bash|shell|console|zsh)\b/;
  // A command with a placeholder the learner must fill in first: <id>, <token>, ...
  const PLACEHOLDER = /<[A-Za-z][^<>\n]*>/;

  const lab = document.getElementById("lab");
  // Served in the join link's own response too: the address bar (reloads,
  // bookmarks, the back button) gets the lesson's address.
  if (lab && lab.dataset.pageUrl && location.pathname !== lab.dataset.pageUrl) {
    history.replaceState(history.state, "", lab.dataset.pageUrl + location.hash);
  }
  const csrfInput = document.querySelector("input[name=csrfmiddlewaretoken]");
  const csrf = csrfInput ? csrfInput.value : "";

  // ---- clickable commands (work before the lab is up: Run then explains) ---
  function commandText(code) {
    // Drop a leading "$ " prompt (console style) and the final newline.
    return code.textContent.replace(/\n+$/, "").split("\n")
      .map(function (line) { return line.replace(/^\$ /, ""); }).join("\n");
  }

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text);
    }
    // Fallback for plain-http sites, where the clipboard API is not offered.
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    let ok = false;
    try { ok = document.execCommand("copy"); } catch (err) { ok = false; }
    document.body.removeChild(area);
    return ok ? Promise.resolve() : Promise.reject(new Error("copy refused"));
  }

  function flash(button, text) {
    const before = button.dataset.label || button.textContent;
    button.dataset.label = before;
    button.textContent = text;
    setTimeout(function () { button.textContent = before; }, 1500);
  }

  document.querySelectorAll(".step .body pre > code").forEach(function (code) {
    const pre = code.parentElement;
    const step = pre.closest(".step");
    const bar = document.createElement("div");
    bar.className = "cmd-actions";
    const isCommand = COMMAND_LANGS.test(code.className);
    if (isCommand && lab) {
      const text = commandText(code);
      const node = code.dataset.node || pre.dataset.node || step.dataset.node || "node1";
      const fill = PLACEHOLDER.test(text);
      const run = document.createElement("button");
      run.type = "button";
      run.className = "cmd-run";
      run.textContent = fill ? "Fill in…" : "Run";
      run.title = fill ? "Fill in the <placeholders>, then run it in " + node + "'s terminal"
                       : "Run this in " + node + "'s terminal";
      const act = fill ? function () { openFill(bar, node, text, run); }
                       : function () { runCommand(node, text, true, run); };
      run.addEventListener("click", act);
      bar.appendChild(run);
      pre.classList.add("command");
      pre.dataset.node = node;
      code.addEventListener("click", act);
      code.title = run.title;
    }
    const copy = document.createElement("button");
    copy.type = "button";
    copy.className = "cmd-copy";
    copy.textContent = "Copy";
    copy.title = "Copy to the clipboard";
    copy.addEventListener("click", function (event) {
      event.stopPropagation();
      copyText(commandText(code)).then(function () { flash(copy, "Copied"); },
                                       function () { flash(copy, "Select and copy"); });
    });
    bar.appendChild(copy);
    // A long command scrolls sideways: the keyboard can reach it to scroll it.
    pre.tabIndex = 0;
    // In a wrapper with the block: the buttons sit in its corner (site.css).
    const wrap = document.createElement("div");
    wrap.className = "cmd-block";
    pre.insertAdjacentElement("beforebegin", wrap);
    wrap.appendChild(pre);
    wrap.appendChild(bar);
  });

  // ---- commands with <placeholders>: a small form, never "<...>" in the shell --
  // Each placeholder gets a field, filled with what the lab can see: IDs and
  // addresses from the terminals' screens (what the learner would copy), the
  // learner's name for a Docker ID. Run types the filled command with Enter.
  const PLACEHOLDERS = /<[A-Za-z][^<>\n]*>/g;

  function screenText() {
    // Every terminal's screen, the active one last (its output is the most recent).
    const order = names.filter(function (n) { return n !== active; }).concat([active]);
    return order.map(function (name) {
      const t = terms[name];
      if (!t || !t.term) return "";
      const buffer = t.term.buffer.active, lines = [];
      for (let i = 0; i < buffer.length; i++) {
        const line = buffer.getLine(i);
        if (line) lines.push(line.translateToString(true));
      }
      return lines.join("\n");
    }).join("\n");
  }

  function lastMatches(re, text) {
    // Distinct matches, most recent first.
    const seen = [], all = text.match(re) || [];
    for (let i = all.length - 1; i >= 0; i--) if (seen.indexOf(all[i]) < 0) seen.push(all[i]);
    return seen;
  }

  function suggestions(fields) {
    const text = screenText();
    const lines = text.split("\n");
    const ids = lastMatches(/\b[0-9a-f]{12}\b/g, text);
    const none = lines.filter(function (l) { return /<none>/.test(l); }).join("\n");
    const imageIds = lastMatches(/\b[0-9a-f]{12}\b/g, none);
    const addresses = lastMatches(/\b(?:\d{1,3}\.){3}\d{1,3}\b/g, text)
      .filter(function (a) { return !/^(127\.|0\.)/.test(a); });
    const token = (text.match(/SWMTKN-1-([0-9a-z-]+)/g) || []).pop();
    const user = (lab && lab.dataset.username || "").toLowerCase().replace(/[^a-z0-9]/g, "");
    let nextId = 0;
    return fields.map(function (name) {
      const key = name.toLowerCase();
      if (/docker id|your name/.test(key)) return user;
      if (/token/.test(key)) return token ? token.replace(/^SWMTKN-1-/, "") : "";
      if (/image id/.test(key)) return imageIds[0] || ids[0] || "";
      if (/\bid\b/.test(key)) return ids[nextId++] || "";
      if (/address/.test(key)) return addresses[0] || "";
      return "";
    });
  }

  function openFill(bar, node, text, button) {
    const open = bar.nextElementSibling;
    if (open && open.classList.contains("cmd-fill")) { open.querySelector("input").focus(); return; }
    const fields = [];
    (text.match(PLACEHOLDERS) || []).forEach(function (p) {
      const name = p.slice(1, -1);
      if (fields.indexOf(name) < 0) fields.push(name);
    });
    const values = suggestions(fields);
    const form = document.createElement("form");
    form.className = "cmd-fill";
    const inputs = fields.map(function (name, i) {
      const label = document.createElement("label");
      label.textContent = name + " ";
      const input = document.createElement("input");
      input.type = "text";
      input.required = true;
      input.spellcheck = false;
      input.autocomplete = "off";
      input.value = values[i];
      input.pattern = "[^<>]+";
      input.title = "No < or > : the value itself";
      label.appendChild(input);
      form.appendChild(label);
      return input;
    });
    const go = document.createElement("button");
    go.type = "submit";
    go.className = "cmd-run";
    go.textContent = "Run";
    const cancel = document.createElement("button");
    cancel.type = "button";
    cancel.textContent = "Cancel";
    cancel.addEventListener("click", function () { form.remove(); button.focus(); });
    const preview = document.createElement("code");
    preview.className = "cmd-fill-preview";
    function filled() {
      return text.replace(PLACEHOLDERS, function (p) {
        return inputs[fields.indexOf(p.slice(1, -1))].value.trim();
      });
    }
    function update() { preview.textContent = filled(); }
    inputs.forEach(function (input) { input.addEventListener("input", update); });
    form.appendChild(go);
    form.appendChild(cancel);
    form.appendChild(preview);
    update();
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (!form.reportValidity()) return;
      const state = lab.dataset.state;
      if (state !== "ready" && state !== "reconnecting") { flash(go, "Start the lab first"); return; }
      runCommand(node, filled(), true, go);
      form.remove();
    });
    bar.insertAdjacentElement("afterend", form);
    const empty = inputs.filter(function (input) { return !input.value; })[0];
    (empty || inputs[0]).focus();
    if (!empty) inputs[0].select();
  }

  // ---- quiz steps -----------------------------------------------------------
  // "Check answer" posts to the form's action; "Show the answer" to its own
  // formaction. The server says whether the answer is right; the explanation
  // comes only with a right answer (or in the message after giving up).
  document.querySelectorAll("form.quiz").forEach(function (form) {
    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      const submitter = event.submitter;
      // A button's formAction is the page's URL when it has no formaction attribute.
      const url = submitter && submitter.hasAttribute("formaction") ? submitter.formAction : form.action;
      const buttons = form.querySelectorAll("button[type=submit]");
      buttons.forEach(function (b) { b.disabled = true; });
      try {
        const response = await fetch(url, {
          method: "POST", body: new FormData(form), credentials: "same-origin",
          headers: {"X-CSRFToken": csrf, "Accept": "application/json"}});
        const body = await response.json();
        if (body.ok) {
          onStep(body);
          if (body.correct) showExplanation(form, body.explain);
        } else {
          setMessage(form.closest(".step"), body.error || "Could not check the answer.");
        }
      } catch (err) {
        setMessage(form.closest(".step"), "Could not reach the server (" + err + ").");
      } finally {
        buttons.forEach(function (b) { b.disabled = false; });
      }
    });
  });

  function showExplanation(form, explain) {
    const p = form.querySelector(".quiz-explain");
    if (!p) return;
    p.textContent = explain ? "Right. " + explain : "Right.";
    p.hidden = false;
  }

  function setMessage(el, text) {
    if (el) el.querySelector(".step-message").textContent = text;
  }

  // ---- steps ----------------------------------------------------------------
  function onStep(event) {
    const el = document.querySelector('.step[data-step="' + event.step + '"]');
    if (!el) return;
    el.dataset.state = event.state;
    el.querySelector(".step-message").textContent = event.state === "done" ? "" : (event.message || "");
    if (event.state === "done") el.querySelector(".step-hint").textContent = "";
    moveResume();
    showProgress(true);
  }

  // ---- narrow screens: Steps or Terminal, one at a time ------------------------
  const paneButtons = {steps: document.getElementById("show-steps"),
                       terminal: document.getElementById("show-terminal")};
  function showPane(pane) {
    if (!paneButtons.steps) return;
    document.body.dataset.pane = pane;
    Object.keys(paneButtons).forEach(function (key) {
      paneButtons[key].setAttribute("aria-selected", key === pane ? "true" : "false");
    });
    // The terminal was hidden: size it to the screen now that it shows.
    if (pane === "terminal") window.dispatchEvent(new Event("resize"));
  }
  if (paneButtons.steps) {
    paneButtons.steps.addEventListener("click", function () { showPane("steps"); });
    paneButtons.terminal.addEventListener("click", function () { showPane("terminal"); });
  }

  // ---- "N of M steps done", and the lesson's end --------------------------------
  const progressLine = document.getElementById("lesson-progress");
  const completePanel = document.getElementById("lesson-complete");

  function duration(ms) {
    const minutes = Math.max(1, Math.round(ms / 60000));
    if (minutes < 60) return minutes + " min";
    const rest = minutes % 60;
    return Math.floor(minutes / 60) + " h " + (rest < 10 ? "0" : "") + rest + " min";
  }

  function showProgress(live) {
    if (!progressLine) return;
    const all = document.querySelectorAll(".steps > .step");
    const done = document.querySelectorAll('.steps > .step[data-state="done"]').length;
    document.getElementById("steps-done").textContent = done;
    const paneCount = document.querySelector(".pane-count");
    if (paneCount) paneCount.textContent = "(" + done + " of " + all.length + ")";
    document.getElementById("lesson-bar").style.width = (all.length ? 100 * done / all.length : 0) + "%";
    if (!completePanel || !live || !all.length || done < all.length || !completePanel.hidden) return;
    // The last step just turned done: say so, with the time it took and what is next.
    const started = Date.parse(completePanel.dataset.started || "");
    if (started) document.getElementById("complete-took").textContent = " in " + duration(Date.now() - started);
    completePanel.hidden = false;
    completePanel.scrollIntoView({block: "nearest", behavior: "smooth"});
  }

  function onHint(event) {
    const el = document.querySelector('.step[data-step="' + event.step + '"]');
    if (!el || el.dataset.state === "done") return;
    el.querySelector(".step-hint").textContent = event.message;
  }

  // ---- resume where the learner stopped --------------------------------------
  (function resume() {
    let target = null;
    const match = /^#step-(\d+)$/.exec(location.hash);
    if (match) target = document.getElementById("step-" + match[1]);
    if (!target) target = document.querySelector(".step.resume");
    if (!target) return;
    document.querySelectorAll(".step.resume").forEach(function (el) { el.classList.remove("resume"); });
    target.classList.add("resume");
    target.scrollIntoView({block: "start"});
  })();

  function moveResume() {
    // The first step not done yet is where to go on; highlight it.
    const current = document.querySelector(".step.resume");
    if (current && current.dataset.state !== "done") return;
    if (current) current.classList.remove("resume");
    const next = document.querySelector('.step:not([data-state="done"])');
    if (next) next.classList.add("resume");
  }

  // ---- messages from the instructor, raised hand ------------------------------
  const messagesBox = document.getElementById("class-messages");
  function onMessage(event) {
    if (!messagesBox) return;
    const p = document.createElement("p");
    p.className = "class-message fresh";
    const who = document.createElement("strong");
    who.textContent = event.from + (event.to_all ? " (to the class)" : " (to you)") + ": ";
    p.appendChild(who);
    p.appendChild(document.createTextNode(event.text));
    messagesBox.prepend(p);
    while (messagesBox.children.length > 5) messagesBox.lastElementChild.remove();
  }

  const handButton = document.getElementById("hand-button");
  function showHand(raised) {
    if (!handButton) return;
    handButton.dataset.raised = raised ? "1" : "0";
    handButton.querySelector(".hand-label").textContent = raised ? "Lower my hand" : "Raise my hand";
    handButton.classList.toggle("primary", raised);
  }
  if (handButton) {
    showHand(handButton.dataset.raised === "1");
    handButton.addEventListener("click", async function () {
      const raise = handButton.dataset.raised !== "1";
      const body = new FormData();
      body.append("raised", raise ? "1" : "0");
      try {
        const response = await fetch(handButton.dataset.url, {method: "POST", body: body,
          credentials: "same-origin", headers: {"X-CSRFToken": csrf}});
        if (response.ok) showHand(raise);
      } catch (err) { /* try again */ }
    });
  }

  if (!lab) return;

  // ---- the lab ----------------------------------------------------------------
  const slug = lab.dataset.slug;
  const statusBox = document.getElementById("lab-status");
  const statusText = document.getElementById("status-text");
  const progress = statusBox.querySelector(".progress");
  const bar = document.getElementById("progress-bar");
  const startButton = document.getElementById("start-button");
  const retryButton = document.getElementById("retry-button");
  // A saved machine offers Resume (the default) and Start fresh instead of Start.
  const savedBox = document.getElementById("saved-machine");
  const savedText = document.getElementById("saved-text");
  const resumeButton = document.getElementById("resume-button");
  const freshButton = document.getElementById("fresh-button");
  let hasSave = !savedBox.hidden;
  const checkButton = document.getElementById("check-button");
  const portsBox = document.getElementById("ports");
  const wsBase = (location.protocol === "https:" ? "wss://" : "ws://") + location.host;
  // The session's nodes run on another host: terminals open on its gateway,
  // with a token the site signs for each connect (labs/sandboxes/gateway.py).
  let gateway = "";
  const encoder = new TextEncoder();
  const historyBox = document.getElementById("term-history");
  const historyText = document.getElementById("term-history-text");
  const historyTitle = document.getElementById("term-history-title");

  const names = (lab.dataset.nodeNames || "node1").split(",").filter(Boolean);
  const terms = {};  // node name -> its tab, box, xterm and socket
  names.forEach(function (name) {
    terms[name] = {
      name: name, id: null, ports: [], term: null, fit: null, socket: null, retry: 0,
      timer: null, queue: [],
      tab: lab.querySelector('.term-tab[data-node-name="' + name + '"]'),
      box: lab.querySelector('.terminal[data-node-name="' + name + '"]'),
    };
    terms[name].tab.addEventListener("click", function () { showTab(name); });
    // Scrolling up over a terminal shows its earlier output (see below).
    // Capturing: xterm.js would otherwise take the wheel for itself.
    terms[name].box.addEventListener("wheel", function (event) {
      if (event.deltaY < 0 && historyBox.hidden) {
        event.preventDefault();
        event.stopPropagation();
        askHistory(terms[name]);
      }
    }, {passive: false, capture: true});
  });
  let active = names[0];
  let deadline = null;
  let lessonSocket = null, lessonRetry = 0;

  function setNodes(nodes) {
    (nodes || []).forEach(function (node) {
      const t = terms[node.name];
      if (!t) return;
      if (t.id !== null && t.id !== node.id) closeTerminal(t);  // a new machine
      t.id = node.id;
      t.ports = node.ports || [];
    });
    renderPorts();
  }

  function setState(state, text) {
    lab.dataset.state = state;
    // Narrow screens: the tab says where Start is while there is no machine.
    if (paneButtons.terminal) {
      paneButtons.terminal.textContent = state === "idle" || state === "failed" ? "Terminal: Start" : "Terminal";
    }
    statusBox.classList.toggle("error", state === "failed");
    if (text !== undefined) statusText.textContent = text;
    startButton.hidden = state !== "idle" || hasSave;
    savedBox.hidden = state !== "idle" || !hasSave;
    retryButton.hidden = state !== "failed";
    progress.hidden = state !== "starting";
    checkButton.disabled = !(state === "ready" || state === "reconnecting");
    if (state !== "starting" && deadline) { clearTimeout(deadline); deadline = null; }
    if (state !== "ready" && state !== "reconnecting") {
      names.forEach(function (name) { closeTerminal(terms[name]); });
    }
  }

  function fail(reason, runningUrl) {
    setState("failed", reason || "Your lab machine could not start.");
    if (runningUrl) {  // too many labs running: where to stop one
      const link = document.createElement("a");
      link.href = runningUrl;
      link.textContent = "See and stop your running labs";
      statusText.append(" ", link);
    }
  }

  // ---- starting -------------------------------------------------------------
  // While the machine starts, the page asks where its session stands every few
  // seconds: a "ready" pushed to it can be lost (seen once in a class of 40;
  // most likely the channel layer, whose shared receive can drop a message
  // when a socket of the same web process is cancelled just then), and the
  // learner would wait for nothing until the deadline.
  // Not while the start's own request is on its way: until it has answered,
  // the server's newest session is the one before (stopped, or failed before
  // a Retry), and its state is no news about this start.
  const STATE_ASK_MS = 3000;
  let startPending = false;
  setInterval(function () {
    if (lab.dataset.state === "starting" && !startPending && lessonSocket &&
        lessonSocket.readyState === WebSocket.OPEN) {
      lessonSocket.send(JSON.stringify({type: "state"}));
    }
  }, STATE_ASK_MS);

  // Never an endless spinner: give up after START_DEADLINE_MS and offer Retry.
  function armDeadline() {
    if (deadline) clearTimeout(deadline);
    deadline = setTimeout(function () {
      deadline = null;
      fail("Your lab machine did not come up within " + START_DEADLINE_MS / 1000 +
           " seconds. Try again; if it keeps failing, tell the lab's operator.");
    }, START_DEADLINE_MS);
  }

  async function start(resume) {
    resume = resume === true;
    showPane("terminal");
    setState("starting", (resume ? "Bringing back your lab machine" : "Starting your lab machine") +
             (names.length > 1 ? "s" : "") + "…");
    bar.style.width = "2%";
    armDeadline();
    let body;
    startPending = true;
    try {
      const form = new FormData();
      form.append("resume", resume ? "1" : "0");
      const response = await fetch(lab.dataset.startUrl, {
        method: "POST", headers: {"X-CSRFToken": csrf}, credentials: "same-origin", body: form});
      body = await response.json();
    } catch (err) {
      fail("Could not reach the server to start your machine (" + err + ").");
      return;
    } finally {
      startPending = false;
    }
    if (!body.ok) { fail(body.error, body.running_url); return; }
    onSession(body);
  }

  function onSession(event) {
    onLimits(event);
    if (event.gateway !== undefined) gateway = event.gateway;
    if (event.nodes) setNodes(event.nodes);
    else if (event.node && terms[names[0]]) terms[names[0]].id = event.node;
    if (event.state === "ready" && event.node) {
      if (lab.dataset.state !== "ready") becomeReady();
    } else if (event.state === "queued") {
      // The lab is full: no spinner and no deadline, a place in the queue instead.
      setState("queued", "The lab is full right now. You are number " + (event.position || "?") +
               " in the queue; your machine starts by itself as soon as there is room.");
    } else if (event.state === "failed") {
      fail("Your lab machine could not start: " + (event.error || "unknown reason"));
    } else if (event.state === "lost") {
      // The host it ran on went away: the server says so; Start places a new one.
      setState("idle", event.error || "Your lab machine went away. Your progress is saved; press Start.");
      names.forEach(function (name) { if (terms[name].term) terms[name].term.reset(); });
    } else if (event.state === "stopped") {
      const saving = lab.dataset.saving === "1" && event.ended_because !== "reset";
      const why = {expired: "Your session reached its time limit, so your lab machine was stopped.",
                   idle: "Your lab machine was stopped after a long time without typing.",
                   reset: "Your instructor is resetting your lab machine…",
                   stopped: saving ? "You stopped your lab machine." :
                     "You stopped your lab machine; it is removed with everything on it."}[event.ended_because];
      let then = " Your progress is saved; press Start to continue.";
      if (event.ended_because === "reset") then = "";
      else if (saving && hasSave) then = " Your progress and your machine are saved: Resume brings it back as you left it.";
      setState("idle", (why || "Your lab machine was stopped.") + then);
      // That machine is gone: its last screen would only mislead.
      names.forEach(function (name) { if (terms[name].term) terms[name].term.reset(); });
    }
  }

  // Session news from the socket (also sent once on every (re)connect).
  function onSessionEvent(event) {
    onLimits(event);
    if (event.gateway !== undefined) gateway = event.gateway;
    const now = lab.dataset.state;
    if (event.nodes && (event.state === "ready")) setNodes(event.nodes);
    if (event.state === "queued") {
      if (now === "starting" || now === "idle" || now === "queued") onSession(event);
    } else if (event.state === "ready") {
      if (now === "starting" || now === "failed" || now === "idle" || now === "queued") onSession(event);
    } else if (event.state === "failed") {
      if (now === "starting") onSession(event);
    } else if (event.state === "stopped") {
      if (now !== "idle") onSession(event);
    } else if (event.state === "lost") {
      onSession(event);  // also on a fresh page: why there is no machine
    } else if (event.state === "starting" && (now === "idle" || now === "queued")) {
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

  startButton.addEventListener("click", function () { start(false); });
  retryButton.addEventListener("click", function () { start(hasSave); });
  resumeButton.addEventListener("click", function () { start(true); });
  freshButton.addEventListener("click", function () { start(false); });
  // The page renders Start disabled, so a click before this script ran (it
  // comes after xterm.js, half a megabyte) cannot be lost.
  startButton.disabled = resumeButton.disabled = freshButton.disabled = false;

  // A session's end saves its machines: "saving", then "saved" (or why not).
  function onMachine(event) {
    if (event.state === "saving") {
      statusText.textContent = "Saving your machine" + (names.length > 1 ? " " + event.node : "") + "…";
    } else if (event.state === "saved") {
      hasSave = true;
      savedText.textContent = "Your machine is saved (" + event.size_mb +
        " MB): files, images and containers as you left them.";
      statusText.textContent = "Your machine is saved.";
      if (lab.dataset.state === "idle") setState("idle");
    } else if (event.state === "failed") {
      statusText.textContent = event.message;
    }
  }

  // Check my work: says that it is checking, then what the check run found
  // (the worker sends "checked" with the steps still open after every run).
  const checkResult = document.getElementById("check-result");
  let checkAsked = 0;
  let checkTimer = null;

  function onChecked(event) {
    if (!checkAsked) return;
    checkAsked = 0;
    clearTimeout(checkTimer);
    checkButton.textContent = "Check my work";
    checkButton.disabled = !(lab.dataset.state === "ready" || lab.dataset.state === "reconnecting");
    // The run's step events came before this one: the page's steps are up to date
    // (quiz steps too, which no check run judges).
    const open = Array.from(document.querySelectorAll('.steps > .step:not([data-state="done"])'))
      .map(function (el) { return parseInt(el.dataset.step, 10); });
    if (!open.length) {
      checkResult.textContent = "Checked: every step is done.";
      return;
    }
    const first = document.querySelector('.step[data-step="' + open[0] + '"]');
    const why = first ? first.querySelector(".step-message").textContent : "";
    checkResult.textContent = "Checked: step " + open[0] + " is not done yet" +
      (why ? ": " + why : ".") + (open.length > 1 ? " (" + open.length + " steps to go)" : "");
  }

  checkButton.addEventListener("click", function () {
    checkAsked = Date.now();
    checkButton.textContent = "Checking…";
    checkButton.disabled = true;
    checkResult.textContent = "";
    clearTimeout(checkTimer);
    checkTimer = setTimeout(function () {
      if (!checkAsked) return;
      checkAsked = 0;
      checkButton.textContent = "Check my work";
      checkButton.disabled = false;
      checkResult.textContent = "The check did not answer in time; try again in a moment.";
    }, 20000);
    if (lessonSocket && lessonSocket.readyState === WebSocket.OPEN) {
      lessonSocket.send(JSON.stringify({type: "check"}));
    } else {
      fetch(lab.dataset.checkUrl, {method: "POST", headers: {"X-CSRFToken": csrf},
                                   credentials: "same-origin"});
    }
  });

  // ---- published ports ------------------------------------------------------
  function renderPorts() {
    portsBox.textContent = "";
    names.forEach(function (name) {
      terms[name].ports.forEach(function (port) {
        const link = document.createElement("a");
        link.href = port.url;
        link.target = "_blank";
        link.rel = "noopener";
        link.className = "port-link";
        link.dataset.node = name;
        link.dataset.port = port.port;
        link.textContent = (names.length > 1 ? name + ":" : "port ") + port.port +
          (port.container ? " (" + port.container + ")" : "") + " ↗";
        link.title = "Open what " + name + " publishes on port " + port.port + " in a new tab";
        portsBox.appendChild(link);
      });
    });
  }

  function onPorts(event) {
    const t = terms[event.name];
    if (!t) return;
    t.ports = event.ports || [];
    renderPorts();
  }

  // ---- lesson events --------------------------------------------------------
  function connectLesson() {
    lessonSocket = new WebSocket(wsBase + "/ws/lessons/" + slug + "/");
    lessonSocket.onopen = function () { lessonRetry = 0; };
    lessonSocket.onmessage = function (message) {
      let event;
      try { event = JSON.parse(message.data); } catch (err) { return; }
      if (event.type === "progress") onProgress(event);
      else if (event.type === "session") {
        // The answer to an ask is news only when the start has moved on.
        if (event.answer && ["ready", "failed", "queued"].indexOf(event.state) < 0) return;
        onSessionEvent(event);
      }
      else if (event.type === "step") onStep(event);
      else if (event.type === "checked") onChecked(event);
      else if (event.type === "hint") onHint(event);
      else if (event.type === "ports") onPorts(event);
      else if (event.type === "error") statusText.textContent = event.message;
      else if (event.type === "message") onMessage(event);
      else if (event.type === "hand") showHand(event.raised);
      else if (event.type === "machine") onMachine(event);
      else if (event.type === "control-request") onControlRequest(event);
    };
    lessonSocket.onclose = function (close) {
      if (close.code === 4403 || close.code === 4404) return;
      lessonRetry = Math.min(lessonRetry + 1, 6);
      setTimeout(connectLesson, 500 * Math.pow(2, lessonRetry));
    };
  }

  // ---- terminals: one per node, in tabs, each connected when first shown ---
  function becomeReady() {
    setState("ready");
    showTab(active);
  }

  function showTab(name) {
    const t = terms[name];
    if (!t) return;
    hideHistory(false);
    active = name;
    names.forEach(function (other) {
      const o = terms[other];
      o.tab.setAttribute("aria-selected", other === name ? "true" : "false");
      o.box.hidden = other !== name;
    });
    if (lab.dataset.state !== "ready" && lab.dataset.state !== "reconnecting") return;
    if (!fontReady) {  // cells are measured from the font when the terminal opens
      fontLoading.then(function () { if (active === name) showTab(name); });
      return;
    }
    ensureTerm(t);
    try { t.fit.fit(); } catch (err) { /* not laid out yet */ }
    if (!t.socket && !t.timer && !t.connecting) connectTerminal(t);
    t.term.focus();
  }

  // The lab's own monospace font (static/vendor/dejavu-mono), loaded before a
  // terminal opens: xterm.js sizes its cells from the font it finds then.
  let fontReady = !document.fonts;
  const fontLoading = (document.fonts ? document.fonts.load('14px "Lab Mono"') : Promise.resolve())
    .catch(function () { /* drawn in the fallback font */ })
    .then(function () { fontReady = true; });

  function ensureTerm(t) {
    if (t.term) return;
    // Its own scrollback holds only the lines tmux happened to scroll one by
    // one (with gaps): the wheel shows tmux's history instead (see above).
    t.term = new Terminal({cursorBlink: true, convertEol: false, fontSize: 14, scrollback: 5000,
                           fontFamily: '"Lab Mono", monospace', lineHeight: 1.1,
                           theme: {background: "#11161f"}});
    t.fit = new FitAddon.FitAddon();
    t.term.loadAddon(t.fit);
    t.term.open(t.box);
    t.term.onData(function (data) { typeInto(t, data); });
    t.term.onBinary(function (data) {
      const bytes = new Uint8Array(data.length);
      for (let i = 0; i < data.length; i++) bytes[i] = data.charCodeAt(i) & 255;
      send(t, bytes);
    });
    t.term.onResize(function (size) {
      send(t, JSON.stringify({type: "resize", cols: size.cols, rows: size.rows}));
    });
  }

  // What the learner types (the session timer counts it as activity). Typed
  // while the machine is ready but its terminal's socket is still opening
  // (right after the start), it waits for the socket instead of being lost.
  function typeInto(t, text) {
    limits.lastTyped = Date.now();
    const bytes = encoder.encode(text);
    const state = lab.dataset.state;
    if (t.id !== null && (state === "ready" || state === "reconnecting")) {
      whenOpen(t, function () { send(t, bytes); });
    } else {
      send(t, bytes);
    }
  }

  // Now if the terminal's socket is open, else as soon as it opens.
  function whenOpen(t, job) {
    if (t.socket && t.socket.readyState === WebSocket.OPEN) job();
    else t.queue.push(job);
  }

  function send(t, data) {
    if (t.socket && t.socket.readyState === WebSocket.OPEN) t.socket.send(data);
  }

  window.addEventListener("resize", function () {
    const t = terms[active];
    if (t && t.fit) { try { t.fit.fit(); } catch (err) { /* hidden */ } }
  });

  async function terminalUrl(t) {
    const size = "cols=" + t.term.cols + "&rows=" + t.term.rows;
    if (!gateway) return wsBase + "/ws/nodes/" + t.id + "/terminal/?" + size;
    const response = await fetch("/nodes/" + t.id + "/terminal", {credentials: "same-origin"});
    const body = await response.json();
    if (!body.ok) throw new Error(body.error || "no terminal");
    const url = body.url.charAt(0) === "/" ? wsBase + body.url : body.url;
    return url + (url.indexOf("?") >= 0 ? "&" : "?") + size;
  }

  function retryTerminal(t, why) {
    t.retry = Math.min(t.retry + 1, 6);
    const wait = 500 * Math.pow(2, t.retry);
    if (t.name === active) {
      setState("reconnecting", why + "; reconnecting in " + Math.round(wait / 1000) + " s…");
    }
    t.timer = setTimeout(function () { connectTerminal(t); }, wait);
  }

  async function connectTerminal(t) {
    if (t.timer) { clearTimeout(t.timer); t.timer = null; }
    if (t.id === null || t.connecting) return;
    // closeTerminal while the URL is on its way (the machine stopped): no socket.
    const generation = t.generation = (t.generation || 0) + 1;
    let url;
    t.connecting = true;
    try {
      url = await terminalUrl(t);
    } catch (err) {
      if (generation === t.generation) {
        retryTerminal(t, "Could not reach " + t.name + "'s terminal (" + err.message + ")");
      }
      return;
    } finally {
      t.connecting = false;
    }
    if (generation !== t.generation || t.id === null || t.socket) return;
    const socket = new WebSocket(url);
    socket.binaryType = "arraybuffer";
    t.socket = socket;
    socket.onopen = function () {
      t.retry = 0;
      if (t.name === active) {
        setState("ready");
        try { t.fit.fit(); } catch (err) { /* hidden */ }
        t.term.focus();
      }
      const queued = t.queue;
      t.queue = [];
      queued.forEach(function (job) { job(); });
    };
    socket.onmessage = function (message) {
      if (typeof message.data === "string") {
        try {
          const event = JSON.parse(message.data);
          if (event.type === "error") statusText.textContent = event.message;
          else if (event.type === "history") showHistory(t, event.text || "");
        } catch (err) { /* ignore */ }
        return;
      }
      t.term.write(new Uint8Array(message.data));
    };
    socket.onclose = function (close) {
      if (socket !== t.socket) return;
      t.socket = null;
      if (close.code === 4403) { fail("This lab machine is not yours."); return; }
      if (close.code === 4421) {  // its host's gateway serves it: ask the site again, now
        gateway = gateway || "elsewhere";
        connectTerminal(t);
        return;
      }
      if (close.code === 4410) {
        fail("Your lab machine " + t.name + " is gone. Start a new one to continue.");
        return;
      }
      retryTerminal(t, "Connection to " + t.name + "'s terminal dropped");
    };
  }

  // ---- earlier output -------------------------------------------------------
  // tmux in the node keeps the terminal's history; the browser never gets it
  // (tmux sends the screen, not every line), so xterm.js has nothing to
  // scroll back to. On request the node's tmux hands over its history, shown
  // as plain text over the terminal, where it can be read, selected and copied.

  function askHistory(t) {
    if (!t.socket || t.socket.readyState !== WebSocket.OPEN) return;
    send(t, JSON.stringify({type: "history"}));
  }

  function showHistory(t, text) {
    if (t.name !== active) return;
    historyText.textContent = text.replace(/\s+$/, "");
    historyTitle.textContent = "Earlier output of " + t.name;
    historyBox.hidden = false;
    historyText.scrollTop = historyText.scrollHeight;
    historyText.focus();
  }

  function hideHistory(focus) {
    if (historyBox.hidden) return;
    historyBox.hidden = true;
    const t = terms[active];
    if (focus !== false && t && t.term) t.term.focus();
  }

  document.getElementById("history-button").addEventListener("click", function () {
    askHistory(terms[active]);
  });
  document.getElementById("term-history-close").addEventListener("click", function () {
    hideHistory();
  });
  historyText.addEventListener("keydown", function (event) {
    if (event.key === "Escape") {
      event.preventDefault();
      hideHistory();
    } else if (event.key.length === 1 && !event.ctrlKey && !event.metaKey && !event.altKey) {
      // Typing goes on in the terminal; Ctrl-C and the like stay here (copy).
      event.preventDefault();
      hideHistory();
      typeInto(terms[active], event.key);
    }
  });
  historyText.addEventListener("wheel", function (event) {
    // Scrolled down past the end: back to the live terminal.
    if (event.deltaY > 0 &&
        historyText.scrollTop + historyText.clientHeight >= historyText.scrollHeight - 2) {
      hideHistory();
    }
  });

  function closeTerminal(t) {
    t.generation = (t.generation || 0) + 1;
    if (t.timer) { clearTimeout(t.timer); t.timer = null; }
    t.queue = [];
    if (t.socket) {
      const socket = t.socket;
      t.socket = null;
      socket.close();
    }
  }

  // A click on a command: switch to its node's tab and type it there.
  // A click on Run (or a filled-in command): typed line by line, each with Enter.
  function runCommand(name, text, enter, button) {
    const state = lab.dataset.state;
    if (state !== "ready" && state !== "reconnecting") {
      flash(button, "Start the lab first");
      return;
    }
    const t = terms[name] || terms[active];
    showPane("terminal");  // on a narrow screen the steps were showing
    showTab(t.name);
    const job = function () {
      if (enter) send(t, encoder.encode(text.replace(/\n/g, "\r") + "\r"));
      else t.term.paste(text);
      t.term.focus();
    };
    whenOpen(t, job);
  }

  // ---- session timer, Extend, idle warning ----------------------------------
  const sessionBar = document.getElementById("session-bar");
  const timerText = document.getElementById("session-timer");
  const extendButton = document.getElementById("extend-button");
  const warnSeconds = parseInt(lab.dataset.warnSeconds || "300", 10);
  const limits = {expires: null, idleDeadline: null, idleSeconds: 1800, lastTyped: 0};

  function onLimits(event) {
    if (event.expires !== undefined) limits.expires = event.expires ? Date.parse(event.expires) : null;
    if (event.idle_deadline !== undefined) {
      limits.idleDeadline = event.idle_deadline ? Date.parse(event.idle_deadline) : null;
    }
    if (event.idle_seconds) limits.idleSeconds = event.idle_seconds;
    if (event.controller !== undefined) showController(event.controller);
    tick();
  }

  function clock(ms) {
    const total = Math.max(0, Math.round(ms / 1000));
    const h = Math.floor(total / 3600), m = Math.floor(total % 3600 / 60), sec = total % 60;
    const pad = function (n) { return (n < 10 ? "0" : "") + n; };
    return (h ? h + ":" + pad(m) : m) + ":" + pad(sec);
  }

  function tick() {
    const state = lab.dataset.state;
    const live = (state === "ready" || state === "reconnecting" || state === "starting") && limits.expires;
    sessionBar.hidden = !live;
    if (!live) return;
    const now = Date.now();
    const left = limits.expires - now;
    let idleAt = limits.idleDeadline || Infinity;
    if (limits.lastTyped) idleAt = Math.max(idleAt, limits.lastTyped + limits.idleSeconds * 1000);
    const idleLeft = idleAt - now;
    let text = "Session ends in " + clock(left);
    let warn = left <= warnSeconds * 1000;
    if (idleLeft < left && idleLeft <= warnSeconds * 1000) {
      text = "No typing for a while: your machine stops in " + clock(idleLeft) + " unless you type or extend";
      warn = true;
    } else if (warn) {
      text = "Your session ends in " + clock(left) + ": extend it to keep your machine";
    }
    timerText.textContent = text;
    sessionBar.classList.toggle("warn", warn);
  }
  setInterval(tick, 1000);

  extendButton.addEventListener("click", async function () {
    extendButton.disabled = true;
    try {
      const response = await fetch(lab.dataset.extendUrl, {method: "POST", credentials: "same-origin",
                                                            headers: {"X-CSRFToken": csrf}});
      const body = await response.json();
      if (body.ok) { limits.lastTyped = Date.now(); onLimits(body); flash(extendButton, "Extended"); }
    } catch (err) { /* the timer stays as it was */ }
    extendButton.disabled = false;
  });

  // ---- Stop: asked once more, since it removes the machine's work --------------
  const stopButton = document.getElementById("stop-button");
  const stopConfirm = document.getElementById("stop-confirm");
  stopButton.addEventListener("click", function () {
    stopConfirm.hidden = false;
    document.getElementById("stop-confirm-no").focus();
  });
  document.getElementById("stop-confirm-no").addEventListener("click", function () {
    stopConfirm.hidden = true;
  });
  document.getElementById("stop-confirm-yes").addEventListener("click", async function () {
    stopConfirm.hidden = true;
    // No Start while it goes: the session event ("stopped") says when it is gone.
    setState("stopping", "Stopping your lab machine…");
    try {
      const response = await fetch(lab.dataset.stopUrl, {
        method: "POST", credentials: "same-origin",
        headers: {"X-CSRFToken": csrf, "Accept": "application/json"}});
      const body = await response.json();
      if (!body.stopping) setState("idle", "Your lab machine is stopped. Press Start for a fresh one.");
    } catch (err) {
      setState("idle", "Could not reach the server to stop your machine (" + err + ").");
    }
  });

  // ---- an instructor asks to take control ------------------------------------
  const prompt = document.getElementById("control-prompt");
  const controlNote = document.getElementById("control-note");
  const revokeButton = document.getElementById("control-revoke");
  let controlAsker = null;

  function ourNode(id) {
    return names.some(function (name) { return terms[name].id === id; });
  }

  function onControlRequest(event) {
    if (!ourNode(event.node)) return;
    controlAsker = event.instructor;
    document.getElementById("control-text").textContent =
      event.name + " (your instructor) asks to type in your terminal. You keep seeing everything and can take control back at any time.";
    prompt.hidden = false;
  }

  function answerControl(grant) {
    prompt.hidden = true;
    if (lessonSocket && lessonSocket.readyState === WebSocket.OPEN) {
      lessonSocket.send(JSON.stringify({type: "control", grant: grant, instructor: controlAsker}));
    }
  }
  document.getElementById("control-accept").addEventListener("click", function () { answerControl(true); });
  document.getElementById("control-decline").addEventListener("click", function () { prompt.hidden = true; });
  revokeButton.addEventListener("click", function () { answerControl(false); });

  function showController(name) {
    controlNote.hidden = revokeButton.hidden = !name;
    controlNote.textContent = name ? name + " is typing in your terminal" : "";
  }

  connectLesson();
  const initialSession = document.getElementById("lab-session");
  if (initialSession) {
    const event = JSON.parse(initialSession.textContent);
    if (event) onLimits(event);
  }
  const initial = document.getElementById("lab-nodes");
  if (initial) setNodes(JSON.parse(initial.textContent));
  if (lab.dataset.node) becomeReady(); else setState("idle");
})();
