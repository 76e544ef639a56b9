// The page's client of the raftbox API: the ordinary /2/... routes, authenticated by the
// session cookie (HttpOnly, sent by the browser) and the session's CSRF token in a header.
// Shared by every page: `RB.session()`, `RB.rpc(route, arg)`, `RB.upload(...)`, `RB.logout()`.
"use strict";

const RB = (function () {
  let csrf = "";

  class ApiError extends Error {
    constructor(status, body) {
      const summary = body && body.error_summary ? body.error_summary : "";
      super(summary || `HTTP ${status}`);
      this.status = status;
      this.body = body;
      this.summary = summary;
    }
  }

  // Who is signed in; goes to the sign-in page when nobody is.
  async function session() {
    const r = await fetch("/web/session", { credentials: "same-origin", cache: "no-store" });
    if (r.status === 401 || r.status === 403) {
      const here = window.location.pathname + window.location.search + window.location.hash;
      window.location.assign("/login?next=" + encodeURIComponent(here));
      throw new ApiError(r.status, null);
    }
    if (!r.ok) throw new ApiError(r.status, null);
    const s = await r.json();
    csrf = s.csrf;
    return s;
  }

  async function answer(r) {
    const text = await r.text();
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch (e) {
      body = { error_summary: text };
    }
    if (r.status === 401) window.location.assign("/login");
    if (!r.ok) throw new ApiError(r.status, body);
    return body;
  }

  async function rpc(route, arg, signal) {
    const r = await fetch("/2/" + route, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Raftbox-CSRF": csrf },
      body: JSON.stringify(arg === undefined ? null : arg),
      credentials: "same-origin",
      signal,
    });
    return answer(r);
  }

  // Dropbox-API-Arg must be ASCII: every other character as a JSON \u escape.
  function headerArg(obj) {
    return JSON.stringify(obj).replace(/[\u007f-\uffff]/g,
      (c) => "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0"));
  }

  // A content route with a body (XMLHttpRequest: it reports upload progress).
  function content(route, arg, body, onProgress) {
    return new Promise((resolve, reject) => {
      const x = new XMLHttpRequest();
      x.open("POST", "/2/" + route);
      x.setRequestHeader("Dropbox-API-Arg", headerArg(arg));
      x.setRequestHeader("Content-Type", "application/octet-stream");
      x.setRequestHeader("X-Raftbox-CSRF", csrf);
      if (onProgress) x.upload.onprogress = (e) => onProgress(e.loaded);
      x.onload = () => {
        let b = null;
        try {
          b = x.responseText ? JSON.parse(x.responseText) : null;
        } catch (e) {
          b = { error_summary: x.responseText };
        }
        if (x.status >= 200 && x.status < 300) resolve(b);
        else reject(new ApiError(x.status, b));
      };
      x.onerror = () => reject(new ApiError(0, { error_summary: "network error" }));
      x.onabort = x.onerror;
      x.send(body);
    });
  }

  // GET endpoints a link can point at (the cookie alone authenticates a download: a read).
  function downloadUrl(path, rev, zip) {
    const arg = rev ? { path, rev } : { path };
    return (zip ? "/web/download_zip" : "/web/download") + "?arg=" + encodeURIComponent(JSON.stringify(arg));
  }

  async function logout() {
    await fetch("/web/logout", {
      method: "POST",
      headers: { "X-Raftbox-CSRF": csrf },
      credentials: "same-origin",
    });
    window.location.assign("/login");
  }

  return { ApiError, session, rpc, content, downloadUrl, logout, headerArg };
})();
