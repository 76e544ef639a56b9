// The sign-in page: POST /web/login with the email and password (JSON), then go to the page
// that sent here (?next=/path, same site only) or to the files.
// The session cookie is HttpOnly: this script never sees it. Errors are shown as text.
"use strict";

(function () {
  const form = document.getElementById("login-form");
  const error = document.getElementById("login-error");

  // Where to go once signed in: ?next=, if it is a path of this site (never another origin:
  // "//host" and "/\\host" are other origins to a browser), else the files.
  function nextPage() {
    const next = new URLSearchParams(window.location.search).get("next") || "/";
    const local = next.startsWith("/") && !next.startsWith("//") && !next.startsWith("/\\");
    return local ? next : "/";
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    const button = form.querySelector("button");
    button.disabled = true;
    try {
      const r = await fetch("/web/login", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({
          email: form.email.value.trim(),
          password: form.password.value,
        }),
        credentials: "same-origin",
      });
      if (r.ok) {
        window.location.assign(nextPage());
        return;
      }
      if (r.status === 429) {
        const wait = r.headers.get("Retry-After") || "a few";
        error.textContent = `Too many attempts: try again in ${wait} seconds.`;
      } else if (r.status === 401) {
        error.textContent = "Wrong email or password.";
      } else {
        error.textContent = `Sign-in failed (${r.status}).`;
      }
    } catch (e) {
      error.textContent = "Cannot reach the server.";
    } finally {
      button.disabled = false;
    }
  });
})();
