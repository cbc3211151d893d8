// The Webcam tab: each camera frame goes to this server's /v1/live and only the
// anonymized answer is drawn; the camera's own picture is never shown. Faces are
// tracked on the server across the frames of one session (as in `anonyface live`).
"use strict";
const Camera = (() => {
  let stream = null, running = false, session = "", frames = 0, since = 0;
  const status = (text) => { $("#cam-status").textContent = text; };

  function query() {
    const fields = optionFields();
    delete fields.format;
    fields.session = session;
    if (!("seed" in fields)) fields.seed = String(Math.floor(Math.random() * 1e9));  // one face per person
    return new URLSearchParams(fields).toString();
  }

  async function start() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      status("This browser gives no camera to this page (a camera needs this page opened as localhost, or over HTTPS).");
      return;
    }
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
    } catch (e) {
      status(`No camera: ${e.message}`);
      return;
    }
    const video = $("#cam-in");
    video.srcObject = stream;
    await video.play();
    session = crypto.randomUUID ? crypto.randomUUID() : String(Math.random()).slice(2) + Date.now();
    running = true;
    frames = 0;
    since = performance.now();
    $("#cam-start").disabled = true;
    $("#cam-stop").disabled = false;
    status("Starting…");
    loop(video, query());
  }

  async function loop(video, params) {
    const grab = document.createElement("canvas");
    const out = $("#cam-out");
    while (running) {
      grab.width = video.videoWidth || 640;
      grab.height = video.videoHeight || 480;
      grab.getContext("2d").drawImage(video, 0, 0, grab.width, grab.height);
      const frame = await new Promise((ok) => grab.toBlob(ok, "image/jpeg", 0.85));
      try {
        const r = await fetch(`/v1/live?${params}`, { method: "POST", body: frame, headers: authHeaders({ "Content-Type": "image/jpeg" }) });
        if (!r.ok) throw new Error(await errorText(r));
        const faces = r.headers.get("X-Anonyface-Faces");
        const picture = await createImageBitmap(await r.blob());
        if (!running) break;
        out.width = picture.width;
        out.height = picture.height;
        out.getContext("2d").drawImage(picture, 0, 0);
        frames += 1;
        const fps = frames / ((performance.now() - since) / 1000);
        status(`Live: ${faces} ${faces === "1" ? "face" : "faces"}, ${fps.toFixed(1)} frames/s`);
        out.dataset.frames = String(frames);
      } catch (e) {
        blank(out);  // never leave a picture that might be stale or wrong
        status(`Stopped: ${e.message}`);
        stop();
      }
    }
  }

  function blank(canvas) {
    const g = canvas.getContext("2d");
    g.fillStyle = "#000";
    g.fillRect(0, 0, canvas.width, canvas.height);
  }

  function stop() {
    running = false;
    if (stream) for (const t of stream.getTracks()) t.stop();
    stream = null;
    $("#cam-start").disabled = false;
    $("#cam-stop").disabled = true;
    if (session) fetch(`/v1/live?session=${session}`, { method: "DELETE", headers: authHeaders() }).catch(() => {});
    session = "";
  }

  function wire() {
    $("#cam-start").addEventListener("click", start);
    $("#cam-stop").addEventListener("click", () => { stop(); blank($("#cam-out")); status("Stopped"); });
  }
  return { wire, stop };
})();
