// medfool: lets the theme's search worker run when the site is opened from file://.
// Browsers refuse `new Worker(...)` for file:// pages, so on file:// only, Worker is replaced by
// a small stand-in that runs the worker script in a hidden same-origin iframe and passes
// messages both ways. Written for medfool (no third-party code, nothing fetched from a CDN);
// its file name contains "iframe-worker" so that the theme's offline plugin does not add the
// CDN copy of its own shim.
(function () {
  "use strict";
  if (location.protocol !== "file:" || typeof window.Worker === "undefined") return;

  class FileWorker extends EventTarget {
    constructor(url) {
      super();
      this.onmessage = null;
      this._pending = [];
      this._ready = false;
      var host = this;
      var frame = document.createElement("iframe");
      frame.hidden = true;
      frame.setAttribute("aria-hidden", "true");
      frame.addEventListener("load", function () {
        var inner = frame.contentWindow;
        inner.postMessage = function (data) { host._deliver(data); };
        var script = inner.document.createElement("script");
        script.src = new URL(url, location.href).href;
        script.onload = function () {
          host._ready = true;
          host._pending.splice(0).forEach(function (data) { host._send(data); });
        };
        inner.document.body.appendChild(script);
      }, { once: true });
      frame.srcdoc = "<!doctype html><html><head><meta charset=\"utf-8\"></head><body></body></html>";
      this._frame = frame;
      if (document.body) document.body.appendChild(frame);
      else document.addEventListener("DOMContentLoaded", function () { document.body.appendChild(frame); });
    }
    _deliver(data) {
      var event = new MessageEvent("message", { data: data });
      this.dispatchEvent(event);
      if (typeof this.onmessage === "function") this.onmessage(event);
    }
    _send(data) {
      this._frame.contentWindow.dispatchEvent(new MessageEvent("message", { data: data }));
    }
    postMessage(data) {
      if (this._ready) this._send(data); else this._pending.push(data);
    }
    terminate() {
      this._frame.remove();
    }
  }
  window.Worker = FileWorker;
})();
