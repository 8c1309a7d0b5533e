// tracker live view: connects to the tracker websocket (protocol v1, docs/protocol.md) and
// draws the preview JPEGs with each face's mesh, points and head-pose axes on a canvas. From a
// server of several streams it shows one, chosen in the stream list (subscribed to alone).
// Plain browser JavaScript, no build step and no network access beyond the websocket.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const canvas = $('view');
  const ctx = canvas.getContext('2d');
  const params = new URLSearchParams(location.search);
  const FATAL = { 4401: 'refused: missing or wrong token', 4403: 'refused: origin not allowed',
                  4408: 'dropped: this page stalled', 1009: 'closed: message too big' };
  const COLORS = { points: '#00ff66', mesh: 'rgba(235, 235, 235, 0.75)', box: '#00dcff',
                   x: '#ff4040', y: '#40ff40', z: '#4080ff' };
  const AXIS_MM = 60;

  // Everything the page knows; exposed for debugging and the test suite.
  const state = {
    hello: null, frame: null, preview: null, previewHeader: null, ws: null, status: 'idle',
    framesReceived: 0, framesDropped: 0, drawn: 0, arrivals: [], latencyMs: null, ended: false,
  };
  window.trackerDemo = state;

  function defaultUrl() {
    if (params.get('ws')) return params.get('ws');
    if (location.protocol === 'http:' || location.protocol === 'https:') {
      return (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/';
    }
    return 'ws://127.0.0.1:8765/';
  }

  function setStatus(text, kind) {
    state.status = text;
    const el = $('status');
    el.textContent = text;
    el.className = 'status ' + (kind || '');
  }

  let reconnectTimer = null;

  function connect() {
    clearTimeout(reconnectTimer);
    if (state.ws) { state.ws.onclose = null; state.ws.close(); }
    const url = new URL($('url').value.trim() || defaultUrl());
    const token = $('token').value;
    if (token) url.searchParams.set('token', token);
    state.ended = false;
    setStatus('connecting to ' + url.host + '...');
    let ws;
    try {
      ws = new WebSocket(url.toString());
    } catch (err) {
      setStatus('bad URL: ' + err.message, 'bad');
      return;
    }
    ws.binaryType = 'arraybuffer';
    state.ws = ws;
    ws.onmessage = (ev) => (typeof ev.data === 'string' ? onText(ev.data) : onPreview(ev.data));
    ws.onclose = (ev) => {
      state.ws = null;
      if (FATAL[ev.code]) return setStatus(FATAL[ev.code], 'bad');
      if (state.ended) return;
      setStatus('disconnected (' + (ev.code || '?') + '); retrying...', 'bad');
      reconnectTimer = setTimeout(connect, 2000);
    };
  }

  function onText(text) {
    let msg;
    try { msg = JSON.parse(text); } catch (err) { return; }
    switch (msg.type) {
      case 'hello':
        state.hello = msg;
        resize(msg.source.width, msg.source.height);
        setStatus('connected (protocol ' + msg.protocol + ', tracker ' + msg.tracker + ')', 'ok');
        $('show-preview').disabled = !msg.preview;
        listStreams(msg.streams);
        if (msg.streams || (msg.preview && !$('show-preview').checked)) subscribe();
        break;
      case 'stream_end':
        if (msg.stream === $('stream').value) {
          setStatus('stream ' + msg.stream + ' ended: ' + msg.reason + ' (' + msg.frames + ' frames)');
        }
        break;
      case 'frame': {
        if (msg.stream !== undefined && msg.stream !== $('stream').value) break; // in flight
        const now = performance.now();
        state.frame = msg;
        state.framesReceived += 1;
        state.framesDropped += msg.dropped;
        state.arrivals.push(now);
        while (state.arrivals.length && now - state.arrivals[0] > 1000) state.arrivals.shift();
        state.latencyMs = Date.now() - msg.wall_time * 1000;
        if (msg.width !== canvas.width || msg.height !== canvas.height) {
          resize(msg.width, msg.height);
        }
        requestDraw();
        break;
      }
      case 'bye':
        state.ended = true;
        setStatus('stream ended: ' + msg.reason + ' (' + msg.frames + ' frames)');
        break;
      case 'error':
        console.warn('tracker server:', msg.message);
        break;
      default:
        break; // 'subscribed' and anything newer
    }
  }

  function onPreview(buffer) {
    const view = new DataView(buffer);
    if (buffer.byteLength < 4) return;
    const n = view.getUint32(0, false);
    let header;
    try {
      header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 4, n)));
    } catch (err) { return; }
    if (header.stream !== undefined && header.stream !== $('stream').value) return;
    const blob = new Blob([new Uint8Array(buffer, 4 + n)], { type: 'image/jpeg' });
    createImageBitmap(blob).then((bitmap) => {
      if (state.preview) state.preview.close();
      state.preview = bitmap;
      state.previewHeader = header;
      requestDraw();
    }, () => {});
  }

  function subscribe() {
    if (state.ws && state.ws.readyState === WebSocket.OPEN) {
      const message = { type: 'subscribe', preview: $('show-preview').checked };
      if (state.hello && state.hello.streams) message.streams = [$('stream').value];
      state.ws.send(JSON.stringify(message));
    }
    requestDraw();
  }

  // A server of several streams: offer them in the list, the first that opened chosen.
  function listStreams(streams) {
    const select = $('stream');
    const previous = select.value;
    select.replaceChildren();
    select.hidden = !streams;
    if (!streams) return;
    for (const s of streams) select.add(new Option(s.name + (s.source ? '' : ' (failed)'), s.name));
    const open = streams.filter((s) => s.source).map((s) => s.name);
    select.value = open.includes(previous) ? previous : (open[0] || streams[0].name);
  }

  function chooseStream() {
    const s = state.hello.streams.find((x) => x.name === $('stream').value);
    state.frame = null;
    if (state.preview) { state.preview.close(); state.preview = null; }
    if (s && s.source) resize(s.source.width, s.source.height);
    subscribe();
  }

  function resize(width, height) {
    canvas.width = width;
    canvas.height = height;
    requestDraw();
  }

  let drawPending = false;
  function requestDraw() {
    if (!drawPending) { drawPending = true; requestAnimationFrame(draw); }
  }

  // Rodrigues vector -> 3x3 rotation matrix (rows).
  function rotation(r) {
    const th = Math.hypot(r[0], r[1], r[2]);
    if (th < 1e-12) return [[1, 0, 0], [0, 1, 0], [0, 0, 1]];
    const [x, y, z] = [r[0] / th, r[1] / th, r[2] / th];
    const c = Math.cos(th), s = Math.sin(th), k = 1 - c;
    return [[c + x * x * k, x * y * k - z * s, x * z * k + y * s],
            [y * x * k + z * s, c + y * y * k, y * z * k - x * s],
            [z * x * k - y * s, z * y * k + x * s, c + z * z * k]];
  }

  // A model point (mm) to frame pixels with the pose's rvec/tvec and the hello's camera.
  function project(R, t, cam, p) {
    const X = R[0][0] * p[0] + R[0][1] * p[1] + R[0][2] * p[2] + t[0];
    const Y = R[1][0] * p[0] + R[1][1] * p[1] + R[1][2] * p[2] + t[1];
    const Z = R[2][0] * p[0] + R[2][1] * p[1] + R[2][2] * p[2] + t[2];
    return Z > 1e-6 ? [cam.fx * X / Z + cam.cx, cam.fy * Y / Z + cam.cy] : null;
  }

  function finite(p) { return p && p[0] !== null && p[1] !== null; }

  function drawFace(face, scale) {
    const pts = face.points;
    if (pts && $('show-mesh').checked && state.hello) {
      ctx.strokeStyle = COLORS.mesh;
      ctx.lineWidth = scale;
      ctx.beginPath();
      for (const [i, j] of state.hello.landmarks.connections) {
        if (finite(pts[i]) && finite(pts[j])) {
          ctx.moveTo(pts[i][0], pts[i][1]);
          ctx.lineTo(pts[j][0], pts[j][1]);
        }
      }
      ctx.stroke();
    }
    if (face.box && $('show-boxes').checked) {
      const [x0, y0, x1, y1] = face.box;
      ctx.strokeStyle = COLORS.box;
      ctx.lineWidth = scale;
      ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
    }
    if (face.pose && $('show-axes').checked && state.hello) {
      const R = rotation(face.pose.rvec);
      const t = face.pose.tvec;
      const cam = state.hello.camera;
      const o = project(R, t, cam, [0, 0, 0]);
      const axes = [[[AXIS_MM, 0, 0], COLORS.x], [[0, -AXIS_MM, 0], COLORS.y],
                    [[0, 0, -AXIS_MM], COLORS.z]];
      ctx.lineWidth = 2.5 * scale;
      for (const [end, color] of axes) {
        const e = project(R, t, cam, end);
        if (!o || !e) continue;
        ctx.strokeStyle = color;
        ctx.beginPath();
        ctx.moveTo(o[0], o[1]);
        ctx.lineTo(e[0], e[1]);
        ctx.stroke();
      }
    }
    if (pts && $('show-points').checked) {
      ctx.fillStyle = COLORS.points;
      const r = 2 * scale;
      for (const p of pts) {
        if (!finite(p)) continue;
        ctx.beginPath();
        ctx.arc(p[0], p[1], r, 0, 2 * Math.PI);
        ctx.fill();
      }
    }
    const label = ['id ' + face.id];
    if (face.pose) {
      label.push('yaw ' + face.pose.yaw.toFixed(0) + '\u00b0 pitch ' + face.pose.pitch.toFixed(0) +
                 '\u00b0 roll ' + face.pose.roll.toFixed(0) + '\u00b0');
    }
    const anchor = face.box || (pts && finite(pts[0]) ? [pts[0][0], pts[0][1]] : null);
    if (anchor) {
      ctx.font = Math.round(11 * scale) + 'px sans-serif';
      ctx.fillStyle = '#ffffff';
      ctx.fillText(label.join('  '), anchor[0], Math.max(12 * scale, anchor[1] - 4 * scale));
    }
  }

  function draw() {
    drawPending = false;
    const w = canvas.width, h = canvas.height;
    const scale = Math.max(1, w / 640);
    ctx.fillStyle = '#111111';
    ctx.fillRect(0, 0, w, h);
    if (state.preview && $('show-preview').checked) {
      const s = (state.previewHeader && state.previewHeader.scale) || 1;
      ctx.drawImage(state.preview, 0, 0, state.preview.width / s, state.preview.height / s);
    }
    const frame = state.frame;
    if (frame) {
      for (const face of frame.faces) drawFace(face, scale);
      state.drawn += 1;
    }
    hud();
  }

  function hud() {
    const f = state.frame;
    const now = performance.now();
    while (state.arrivals.length && now - state.arrivals[0] > 1000) state.arrivals.shift();
    const lines = [
      'fps      ' + state.arrivals.length,
      'latency  ' + (state.latencyMs === null ? '-' : state.latencyMs.toFixed(0) + ' ms'),
      'frame    ' + (f ? f.frame : '-') + (f ? '  t=' + f.time.toFixed(2) + ' s' : ''),
      'faces    ' + (f ? f.faces.length : '-'),
      'dropped  ' + state.framesDropped,
    ];
    $('hud').textContent = lines.join('\n');
  }

  $('url').value = defaultUrl();
  $('token').value = params.get('token') || '';
  $('connect-form').addEventListener('submit', (ev) => { ev.preventDefault(); connect(); });
  $('show-preview').addEventListener('change', subscribe);
  $('stream').addEventListener('change', chooseStream);
  for (const id of ['show-mesh', 'show-points', 'show-axes', 'show-boxes']) {
    $(id).addEventListener('change', requestDraw);
  }
  setInterval(hud, 500);
  hud();
  connect();
})();
