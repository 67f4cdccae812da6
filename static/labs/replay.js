// Plays back a terminal recording (asciicast v2, as our server writes it) in
// xterm.js: play/pause, speed, a seek bar, and a timeline of the markers the
// server wrote (commands that ended, steps done, failed checks, dropped output).
//
// The page provides #replay with data-cast-url (and optionally data-start, or
// data-at in wall-clock seconds) and
// the controls inside it; see templates for the markup. For tests the player is
// exposed as window.labReplay, and #replay's data-state tells where it is:
// loading | ready | playing | paused | ended | error.
(function () {
  "use strict";

  // A pause longer than this (seconds) plays as this long, like asciinema's
  // idle_time_limit: a learner reading the lesson for ten minutes should not
  // mean ten minutes of an unchanging screen. The seek bar and the clock count
  // this compressed playback time; the timeline shows the real time of day.
  const IDLE_LIMIT = 2;
  // While playing, wake at least this often (ms) so the clock and the seek bar
  // move even when no event is due for a while.
  const MAX_TICK_MS = 100;
  // data-start highlights a marker this close to it (seconds): links to a
  // moment are often made from rounded times.
  const START_SLACK = 0.5;
  // Sizes a resize event may ask for; anything else is treated as damage.
  const MAX_COLS = 1000, MAX_ROWS = 500;

  const root = document.getElementById("replay");
  if (!root) return;
  const termBox = document.getElementById("replay-term");
  const playButton = document.getElementById("replay-play");
  const speedSelect = document.getElementById("replay-speed");
  const seekBar = document.getElementById("replay-seek");
  const clock = document.getElementById("replay-time");
  const marksList = document.getElementById("replay-marks");
  const status = document.getElementById("replay-status");

  // A failure the viewer should read in the status line (not a bug).
  function userError(message) {
    const error = new Error(message);
    error.forViewer = true;
    return error;
  }

  function setState(state) { root.dataset.state = state; }
  function say(text) { status.textContent = text; }

  setState("loading");
  say("Loading the recording…");
  // Nothing to control until the recording is in.
  playButton.disabled = true;
  seekBar.disabled = true;

  // The terminal measures its cells from the font, so it opens once the lab's
  // font is in (as in watch.js); a font that fails to load falls back to
  // monospace rather than stopping the player. The recording downloads meanwhile.
  const fontReady = (document.fonts ? document.fonts.load('14px "Lab Mono"') : Promise.resolve())
    .catch(function () {});
  const castText = fetch(root.dataset.castUrl, {credentials: "same-origin", cache: "no-cache"})
    .then(function (response) {
      if (!response.ok) throw userError("Could not load the recording (HTTP " + response.status + ").");
      return response.text();
    }, function () {
      throw userError("Could not load the recording (network error).");
    });

  Promise.all([castText, fontReady])
    .then(function (results) { start(parseCast(results[0])); })
    .catch(function (error) {
      setState("error");
      playButton.disabled = true;
      seekBar.disabled = true;
      if (error && error.forViewer) {
        say(error.message);
      } else {
        say("The recording could not be played.");
        console.error(error);  // a bug in this player: keep the details for whoever debugs it
      }
    });

  // ---- Reading the recording -------------------------------------------------

  function parseSize(text) {
    const match = /^(\d+)x(\d+)$/.exec(text);
    if (!match) return null;
    const cols = Number(match[1]), rows = Number(match[2]);
    if (cols < 1 || rows < 1 || cols > MAX_COLS || rows > MAX_ROWS) return null;
    return {cols: cols, rows: rows};
  }

  // One event line: an event, null when the line is damaged, or undefined for
  // a well-formed event this player does not show (such as "i", keyboard input).
  function parseEvent(line) {
    let value;
    try { value = JSON.parse(line); } catch (err) { return null; }
    if (!Array.isArray(value) || value.length < 3) return null;
    const t = value[0], code = value[1], data = value[2];
    if (typeof t !== "number" || !isFinite(t) || t < 0 || typeof code !== "string" || typeof data !== "string") {
      return null;
    }
    if (code === "o") return {t: t, kind: "o", data: data};
    if (code === "m") return {t: t, kind: "m", label: data};
    if (code === "r") {
      const size = parseSize(data);
      return size ? {t: t, kind: "r", cols: size.cols, rows: size.rows} : null;
    }
    return undefined;
  }

  function parseCast(text) {
    const lines = text.split(/\r?\n/);
    let at = 0;
    while (at < lines.length && !lines[at].trim()) at++;
    let header = null;
    try { header = JSON.parse(lines[at]); } catch (err) { header = null; }
    if (!header || typeof header !== "object" || header.version !== 2) {
      throw userError("This file is not a terminal recording this player can read (asciicast v2).");
    }
    // The size the recording starts at; a header without one gets the usual 80x24.
    const size = parseSize(header.width + "x" + header.height) || {cols: 80, rows: 24};

    const events = [];
    let damaged = 0;
    for (at++; at < lines.length; at++) {
      // A blank line (such as the one after the final newline) is not damage.
      if (!lines[at].trim()) continue;
      const event = parseEvent(lines[at]);
      if (event === null) damaged++;
      else if (event) { event.order = events.length; events.push(event); }
    }
    // The server writes events in time order, but a little disorder (two
    // writers racing) must not replay output backwards: sort, stably.
    events.sort(function (a, b) { return a.t - b.t || a.order - b.order; });

    // Compressed playback time of each event (see IDLE_LIMIT); the first gap,
    // from the start of the recording, counts too.
    let play = 0, previous = 0;
    const marks = [];
    events.forEach(function (event, index) {
      play += Math.min(event.t - previous, IDLE_LIMIT);
      previous = event.t;
      event.c = play;
      event.index = index;
      if (event.kind === "m") { event.mark = marks.length; marks.push(event); }
    });
    return {
      header: header,
      size: size,
      events: events,
      marks: marks,
      damaged: damaged,
      hasOutput: events.some(function (event) { return event.kind === "o"; }),
      duration: events.length ? events[events.length - 1].c : 0,
    };
  }

  // ---- Showing times ------------------------------------------------------------

  function pad(n) { return String(n).padStart(2, "0"); }

  // Playback position as m:ss (minutes may pass 59: recordings are lessons, not films).
  function playClock(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    return Math.floor(s / 60) + ":" + pad(s % 60);
  }

  // ---- The player -----------------------------------------------------------------

  function start(cast) {
    const events = cast.events, marks = cast.marks, duration = cast.duration;
    const startedAt = cast.header.timestamp;

    // The real time of day an event happened, HH:MM:SS local time; without a
    // start time in the header, the real time into the recording instead.
    function wallClock(t) {
      if (typeof startedAt === "number" && isFinite(startedAt)) {
        const date = new Date((startedAt + t) * 1000);
        return pad(date.getHours()) + ":" + pad(date.getMinutes()) + ":" + pad(date.getSeconds());
      }
      const s = Math.floor(t);
      return pad(Math.floor(s / 3600)) + ":" + pad(Math.floor(s / 60) % 60) + ":" + pad(s % 60);
    }

    if (typeof Terminal !== "function") throw userError("The terminal could not be loaded; reload the page.");
    const term = new Terminal({cols: cast.size.cols, rows: cast.size.rows, fontSize: 14,
                               fontFamily: '"Lab Mono", monospace', lineHeight: 1.1,
                               theme: {background: "#11161f"}, disableStdin: true,
                               cursorBlink: false, scrollback: 1000});
    term.open(termBox);

    const markItems = marks.map(buildMark);

    let next = 0;             // events[0 .. next) are on the screen (or queued for it)
    let playing = false;
    let anchorPos = 0;        // playback position (compressed s) at anchorTime
    let anchorTime = performance.now();
    let speed = Number(speedSelect.value) || 1;
    let timer = null;
    let current = -1;         // index in marks of the highlighted marker
    let dragging = false;     // the viewer holds the seek bar's thumb: do not move it under them
    let painting = false, paintAgain = false;

    // Anything beyond the end is the end; the range's step would otherwise
    // stop it just short of the last event.
    seekBar.max = String(Math.ceil(duration * 100) / 100);

    // The recorder's first output is the screen as it found it. A moment
    // before that (a check that failed while the recorder was still
    // attaching, on a busy host) was not recorded, but what it left on the
    // screen was: a link to it, or its marker, shows that first screen and
    // says so, rather than an empty terminal. 0 when nothing was recorded.
    const firstOutput = events.findIndex(function (event) { return event.kind === "o"; });
    const firstShown = firstOutput + 1;

    // What the status line says about the whole recording.
    const noted = [];
    if (!cast.hasOutput) noted.push("Nothing was recorded in this terminal.");
    if (cast.damaged) {
      noted.push(cast.damaged + " damaged line" + (cast.damaged === 1 ? "" : "s") + " skipped"
                 + " (the recording may have been cut short).");
    }
    const notes = noted.join(" ");

    // -- time lookups --

    // How many events have event[key] <= value (events are sorted by t, and so by c).
    function countUpTo(value, key) {
      let low = 0, high = events.length;
      while (low < high) {
        const mid = (low + high) >> 1;
        if (events[mid][key] <= value) low = mid + 1; else high = mid;
      }
      return low;
    }

    // The playback position of a real time (seconds since the header's timestamp).
    function playTimeAt(realT) {
      const n = countUpTo(realT, "t");
      const before = n ? events[n - 1] : {t: 0, c: 0};
      return Math.min(before.c + Math.min(realT - before.t, IDLE_LIMIT), duration);
    }

    function position() {
      if (!playing) return anchorPos;
      return Math.min(duration, anchorPos + (performance.now() - anchorTime) / 1000 * speed);
    }

    // -- the terminal --

    function resizeTerm(size) {
      if (term.cols !== size.cols || term.rows !== size.rows) term.resize(size.cols, size.rows);
    }

    // Bring the screen to events[0 .. next) from scratch: the output so far in a
    // single write (thousands of small writes would make seeking slow), at the
    // size of the last resize before that point. The reset runs in a write
    // callback because xterm parses writes later, in order: a reset done now
    // would come before output still queued, which would then land on the new
    // screen. While one repaint is being parsed, further seeks (a dragged seek
    // bar) only ask for one more, so big writes never pile up.
    function repaint() {
      if (painting) { paintAgain = true; return; }
      painting = true;
      let size = cast.size;
      const chunks = [];
      for (let i = 0; i < next; i++) {
        const event = events[i];
        if (event.kind === "o") chunks.push(event.data);
        else if (event.kind === "r") size = event;
      }
      term.write("", function () { term.reset(); resizeTerm(size); });
      term.write(chunks.join(""), function () {
        painting = false;
        if (paintAgain) { paintAgain = false; repaint(); }
      });
    }

    // Write every event due by playback position pos, batched into as few writes
    // as possible; a resize runs once the output before it has been parsed.
    function advance(pos) {
      let text = "", mark = -1;
      while (next < events.length && events[next].c <= pos) {
        const event = events[next++];
        if (event.kind === "o") {
          text += event.data;
        } else if (event.kind === "r") {
          term.write(text, function () { resizeTerm(event); });
          text = "";
        } else {
          mark = event.mark;
        }
      }
      if (text) term.write(text);
      if (mark >= 0) highlight(mark);
    }

    // -- the timeline --

    function markClass(label) {
      if (/^\$ /.test(label)) {
        const exit = /\[exit (-?\d+)\]\s*$/.exec(label);
        return exit && Number(exit[1]) !== 0 ? "mark-cmd mark-cmd-failed" : "mark-cmd";
      }
      if (/^step \S+ done$/.test(label)) return "mark-done";
      if (/^check failed\b/.test(label)) return "mark-fail";
      if (/^output dropped before this point\b/.test(label)) return "mark-cut";
      return "mark-other";
    }

    function buildMark(mark) {
      const item = document.createElement("li");
      item.className = markClass(mark.label);
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.t = String(mark.t);
      const time = document.createElement("span");
      time.className = "mark-time";
      time.textContent = wallClock(mark.t);
      const label = document.createElement("span");
      label.className = "mark-label";
      label.textContent = mark.label;
      button.append(time, " ", label);
      button.addEventListener("click", function () { seekAt(mark.t, mark.index + 1, mark.mark); });
      item.appendChild(button);
      marksList.appendChild(item);
      return item;
    }

    function highlight(index) {
      if (index === current) return;
      if (current >= 0) {
        markItems[current].classList.remove("current");
        markItems[current].removeAttribute("aria-current");
      }
      current = index;
      if (index < 0) return;
      const item = markItems[index];
      item.classList.add("current");
      item.setAttribute("aria-current", "true");
      // Keep it in sight inside the scrolling timeline without scrolling the
      // page (scrollIntoView would move the whole page while playing).
      if (item.offsetTop < marksList.scrollTop) {
        marksList.scrollTop = item.offsetTop;
      } else if (item.offsetTop + item.offsetHeight > marksList.scrollTop + marksList.clientHeight) {
        marksList.scrollTop = item.offsetTop + item.offsetHeight - marksList.clientHeight;
      }
    }

    // The last marker among events[0 .. count).
    function lastMarkBefore(count) {
      for (let i = marks.length - 1; i >= 0; i--) if (marks[i].index < count) return i;
      return -1;
    }

    // The marker closest to real time t, if one is within START_SLACK.
    function markNear(t) {
      let best = -1;
      marks.forEach(function (mark, i) {
        const off = Math.abs(mark.t - t);
        if (off <= START_SLACK && (best < 0 || off < Math.abs(marks[best].t - t))) best = i;
      });
      return best;
    }

    // -- controls --

    function showTime(pos) {
      const text = playClock(pos) + " / " + playClock(duration);
      if (clock.textContent !== text) clock.textContent = text;
      if (!dragging) seekBar.value = String(pos);
    }

    function showButton() {
      if (playing) playButton.textContent = "Pause";
      else playButton.textContent = anchorPos >= duration && duration > 0 ? "Replay" : "Play";
    }

    // Put the player at playback position pos with events[0 .. count) applied
    // (count may stop short of pos: a real time in a shortened pause maps to
    // the same position as the event after the pause, which is not yet due).
    function jump(pos, count, mark) {
      anchorPos = Math.max(0, Math.min(pos, duration));
      anchorTime = performance.now();
      next = count;
      repaint();
      highlight(mark === undefined ? lastMarkBefore(count) : mark);
      showTime(anchorPos);
      showButton();
    }

    // A seek by the viewer: playing goes on playing from there.
    function seek(pos, count, mark) {
      jump(pos, count, mark);
      if (playing) restartTicks();
      else setState("paused");
    }

    function seekPlayTime(pos) {
      seek(pos, countUpTo(Math.min(pos, duration), "c"));
      say(notes);
    }

    // Real time t with events[0 .. count) applied (a marker's, a link's
    // moment): the screen as it was then, or, before the recording's first
    // screen, that screen (see firstShown).
    function seekAt(t, count, mark) {
      const early = count < firstShown;
      seek(playTimeAt(t), Math.max(count, firstShown), mark);
      say(early ? (notes + " The recording began at " + wallClock(events[firstOutput].t)
                   + ", after this moment: its first screen is shown.").trim() : notes);
    }

    function seekReal(t, mark) {
      t = Math.max(0, Number(t) || 0);
      seekAt(t, countUpTo(t, "t"), mark);
    }

    function tick() {
      timer = null;
      if (!playing) return;
      const pos = position();
      advance(pos);
      showTime(pos);
      if (pos >= duration) { finish(); return; }
      const due = next < events.length ? events[next].c : duration;
      const wait = (due - pos) / speed * 1000;
      timer = setTimeout(tick, Math.max(0, Math.min(wait, MAX_TICK_MS)));
    }

    function restartTicks() {
      if (timer !== null) clearTimeout(timer);
      tick();
    }

    function finish() {
      playing = false;
      anchorPos = duration;
      setState("ended");
      showButton();
    }

    function play() {
      if (playing) return;
      // At the end, play means from the beginning.
      if (anchorPos >= duration) { jump(0, countUpTo(0, "c")); say(notes); }
      playing = true;
      anchorTime = performance.now();
      setState("playing");
      showButton();
      tick();
    }

    function pause() {
      if (!playing) return;
      anchorPos = position();
      playing = false;
      if (timer !== null) { clearTimeout(timer); timer = null; }
      advance(anchorPos);  // what was due since the last tick
      showTime(anchorPos);
      setState("paused");
      showButton();
    }

    function toggle() { if (playing) pause(); else play(); }

    playButton.addEventListener("click", toggle);

    speedSelect.addEventListener("change", function () {
      // Re-anchor so the new speed counts from now, not from the last play.
      anchorPos = position();
      anchorTime = performance.now();
      speed = Number(speedSelect.value) || 1;
      if (playing) restartTicks();
    });

    seekBar.addEventListener("pointerdown", function () { dragging = true; });
    ["pointerup", "pointercancel", "change"].forEach(function (type) {
      seekBar.addEventListener(type, function () { dragging = false; });
    });
    seekBar.addEventListener("input", function () { seekPlayTime(Number(seekBar.value)); });

    document.addEventListener("keydown", function (event) {
      if (event.key !== " " || event.repeat || event.ctrlKey || event.altKey || event.metaKey) return;
      const target = event.target;
      // Form controls use Space themselves (a focused button clicks, a select
      // opens). The terminal's hidden textarea is one too, but this terminal
      // takes no input, so Space in it plays and pauses.
      if (target instanceof Element && !termBox.contains(target)
          && target.closest("input, select, textarea, button, [contenteditable]")) return;
      if (playButton.disabled) return;
      event.preventDefault();  // not a page scroll
      toggle();
    });

    window.labReplay = {
      term: term,
      duration: duration,
      position: position,
      seekReal: function (t) { seekReal(t); },
      play: play,
      pause: pause,
      playing: function () { return playing; },
    };

    say(notes);
    // Where to open: at data-start (paused), else at the beginning. The site
    // links a moment as data-at, wall-clock seconds (a failed check's time):
    // that is data-start once the header's timestamp is known.
    let startAt = root.dataset.start ? Number(root.dataset.start) : NaN;
    if (!isFinite(startAt) && root.dataset.at && isFinite(Number(cast.header.timestamp))) {
      startAt = Number(root.dataset.at) - Number(cast.header.timestamp);
    }
    if (isFinite(startAt)) {
      const mark = markNear(startAt);
      // A link to a marker's moment opens exactly at the marker, with all
      // that led to it on the screen, even if the time was rounded.
      if (mark >= 0) seekReal(marks[mark].t, mark);
      else seekReal(startAt);
    } else {
      jump(0, countUpTo(0, "c"));
      setState("ready");
    }

    playButton.disabled = !cast.hasOutput;
    seekBar.disabled = !cast.hasOutput;
  }
})();
