// The file browser (issue 14). Vanilla JS, no build step; talks to the ordinary /2/... routes
// through api.js (session cookie + CSRF header). File names are only ever inserted as text
// (textContent, never innerHTML), so a name like <img src=x onerror=...> stays a name.
//
// State: `cwd` (the open folder, "" for the root, from the URL hash), `entries` (its listing),
// `sortKey`/`sortDir`, `showDeleted`, `searching`. The open folder is watched with
// files/list_folder/longpoll on the listing's cursor and reloaded when it changes.
// Each row's actions live in one <td class="row-actions">: `rowActions(entry)` builds them
// (the sharing actions come from share.js's `RBShare.actions(entry)`; inside a folder shared
// with me as a viewer the write actions are left out, and the server refuses them anyway).
"use strict";

(function () {
  const $ = (sel) => document.querySelector(sel);
  const tbody = $("#listing tbody");
  const status = $("#status");
  const BIG_FILE_BYTES = 8 * 1024 * 1024; // bigger files go through upload sessions
  const CHUNK_BYTES = 4 * 1024 * 1024;
  const RETRY_MAX = 6;

  let cwd = "";
  let entries = [];
  let sortKey = "name";
  let sortDir = 1;
  let showDeleted = false;
  let searching = null; // the query shown, or null
  let watch = null; // AbortController of the long-poll of the open folder
  let generation = 0; // bumps on every navigation: stale answers are dropped

  // -- helpers ---------------------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v);
    }
    for (const c of children) e.append(c);
    return e;
  }

  function button(label, onclick, cls) {
    return el("button", { type: "button", class: cls || "", onclick, text: label });
  }

  function size(n) {
    if (n === undefined || n === null) return "";
    const units = ["B", "KB", "MB", "GB", "TB"];
    let i = 0;
    while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
    return (i ? n.toFixed(n < 10 ? 1 : 0) : String(n)) + " " + units[i];
  }

  function when(ts) {
    if (!ts) return "";
    const d = new Date(ts);
    return d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
  }

  function join(dir, name) {
    return (dir === "" ? "" : dir) + "/" + name;
  }

  function parentOf(path) {
    return path.slice(0, path.lastIndexOf("/"));
  }

  function say(text) {
    status.textContent = text;
  }

  function fail(what, e) {
    const why = RBShare.why(e);
    say(`${what} failed: ${why}`);
  }

  // -- the dialogs (one prompt dialog; resolves to the text, or null on Cancel/Escape) ---
  function ask(label, value, okLabel, textOnly) {
    const dlg = $("#prompt");
    const input = $("#prompt-input");
    $("#prompt-label").textContent = label;
    $("#prompt-text").textContent = textOnly || "";
    input.hidden = !!textOnly;
    $("#prompt-label").hidden = false;
    input.value = value || "";
    $("#prompt-ok").textContent = okLabel || "OK";
    dlg.returnValue = "";
    return new Promise((resolve) => {
      dlg.addEventListener("close", () => {
        resolve(dlg.returnValue === "ok" ? input.value : null);
      }, { once: true });
      dlg.showModal();
      if (!textOnly) { input.focus(); input.select(); }
    });
  }

  // -- navigation ------------------------------------------------------------------------
  function pathFromHash() {
    const h = decodeURIComponent(window.location.hash.replace(/^#/, ""));
    return h === "/" ? "" : h.replace(/\/+$/, "");
  }

  function go(path) {
    window.location.hash = "#" + encodeURIComponent(path || "/").replace(/%2F/g, "/");
  }

  function breadcrumbs() {
    const nav = $("#breadcrumbs");
    nav.replaceChildren();
    const parts = cwd.split("/").filter(Boolean);
    const root = el("a", { href: "#/", text: "All files" });
    nav.append(root);
    let at = "";
    for (const p of parts) {
      at += "/" + p;
      nav.append(el("span", { class: "sep", "aria-hidden": "true", text: "›" }));
      const a = el("a", { href: "#" + encodeURIComponent(at).replace(/%2F/g, "/"), text: p });
      nav.append(a);
    }
    if (searching !== null) {
      nav.append(el("span", { class: "sep", "aria-hidden": "true", text: "›" }));
      nav.append(el("span", { text: `Search: ${searching}` }));
    }
    const last = nav.lastElementChild;
    if (last) last.setAttribute("aria-current", "page");
  }

  async function load() {
    const gen = ++generation;
    searching = null;
    $("#search").value = "";
    if (watch) watch.abort();
    breadcrumbs();
    say("Loading…");
    try {
      let r = await RB.rpc("files/list_folder", { path: cwd, include_deleted: showDeleted });
      let all = r.entries;
      while (r.has_more) {
        r = await RB.rpc("files/list_folder/continue", { cursor: r.cursor });
        all = all.concat(r.entries);
      }
      if (gen !== generation) return;
      entries = all;
      render();
      say("");
      watchFolder(r.cursor, gen);
      writable(gen);
    } catch (e) {
      if (gen !== generation) return;
      entries = [];
      render();
      fail("Opening the folder", e);
    }
  }

  // The write controls of the open folder: hidden inside a folder shared with me as a viewer.
  async function writable(gen) {
    const ro = await RBShare.readOnly(cwd);
    if (gen !== generation) return;
    for (const c of document.querySelectorAll("#new-folder, .upload-button, #upload, #upload-folder")) c.hidden = ro;
  }

  // The open folder updates live: long-poll on its cursor; on a change, list again.
  async function watchFolder(cursor, gen) {
    watch = new AbortController();
    const signal = watch.signal;
    let backoff = 1;
    while (gen === generation && !signal.aborted) {
      try {
        const r = await fetch("/2/files/list_folder/longpoll", {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ cursor, timeout: 30 }),
          signal,
        });
        if (!r.ok) throw new Error(`long-poll ${r.status}`);
        const b = await r.json();
        backoff = 1;
        if (b.backoff) await new Promise((ok) => setTimeout(ok, b.backoff * 1000));
        if (b.changes && gen === generation) {
          refresh(gen);
          return;
        }
      } catch (e) {
        if (signal.aborted) return;
        await new Promise((ok) => setTimeout(ok, backoff * 1000));
        backoff = Math.min(backoff * 2, 30);
      }
    }
  }

  // List the open folder again without losing the page's place (a change elsewhere).
  async function refresh(gen) {
    if (gen !== generation || searching !== null) return;
    try {
      let r = await RB.rpc("files/list_folder", { path: cwd, include_deleted: showDeleted });
      let all = r.entries;
      while (r.has_more) {
        r = await RB.rpc("files/list_folder/continue", { cursor: r.cursor });
        all = all.concat(r.entries);
      }
      if (gen !== generation) return;
      entries = all;
      render();
      watchFolder(r.cursor, gen);
      RBShare.invitations();
    } catch (e) {
      if (gen === generation) setTimeout(() => refresh(gen), 2000);
    }
  }

  function reload() {
    if (searching !== null) return search(searching);
    return refresh(generation);
  }

  // -- the listing -----------------------------------------------------------------------
  function kindOf(e) {
    return e[".tag"];
  }

  function sorted() {
    const key = {
      name: (e) => e.name.toLocaleLowerCase(),
      size: (e) => (kindOf(e) === "file" ? e.size : -1),
      modified: (e) => (kindOf(e) === "file" ? e.server_modified : ""),
    }[sortKey];
    return entries.slice().sort((a, b) => {
      const fa = kindOf(a) === "folder" ? 0 : 1;
      const fb = kindOf(b) === "folder" ? 0 : 1;
      if (fa !== fb) return fa - fb;
      const ka = key(a), kb = key(b);
      const c = ka < kb ? -1 : ka > kb ? 1 : a.name.localeCompare(b.name);
      return c * sortDir;
    });
  }

  function render() {
    tbody.replaceChildren();
    for (const th of document.querySelectorAll("#listing th[data-key]")) {
      th.setAttribute("aria-sort", th.dataset.key === sortKey
        ? (sortDir > 0 ? "ascending" : "descending") : "none");
    }
    const list = sorted();
    for (const e of list) tbody.append(row(e));
    $("#empty").hidden = list.length > 0 || searching !== null;
    if (searching !== null && list.length === 0) say(`Nothing found for “${searching}”.`);
  }

  function row(e) {
    const kind = kindOf(e);
    const tr = el("tr", { class: kind });
    const name = el("td", { class: "name" });
    const icon = el("span", { class: `icon icon-${kind}`, "aria-hidden": "true" });
    const label = searching !== null ? e.path_display : e.name;
    if (kind === "folder") {
      name.append(icon, el("a", { href: "#" + encodeURIComponent(e.path_display).replace(/%2F/g, "/"), text: label }));
    } else if (kind === "file") {
      name.append(icon, el("a", { href: RB.downloadUrl(e.path_display), download: e.name, text: label }));
    } else {
      name.append(icon, el("span", { text: label }));
    }
    tr.append(
      name,
      el("td", { class: "size", text: kind === "file" ? size(e.size) : "" }),
      el("td", { class: "modified", text: kind === "file" ? when(e.server_modified) : "" }),
      rowActions(e),
    );
    return tr;
  }

  function rowActions(e) {
    const kind = kindOf(e);
    const td = el("td", { class: "row-actions" });
    if (kind === "deleted") {
      td.append(button("Restore", () => restoreDeleted(e)));
      return td;
    }
    if (kind === "file") {
      td.append(el("a", { class: "button", href: RB.downloadUrl(e.path_display), download: e.name, role: "button", text: "Download" }));
    } else {
      // a folder: a zip of it, streamed by the server
      td.append(el("a", { class: "button", href: RB.downloadUrl(e.path_display, null, true), download: e.name + ".zip", role: "button", text: "Download" }));
    }
    // a viewer's shared folder: no writes inside it (its own row, the mount point, is mine)
    const readOnly = e.sharing_info && e.sharing_info.read_only && !e.shared_folder_id;
    if (!readOnly) {
      td.append(
        button("Rename", () => rename(e)),
        button("Move", () => move(e)),
        button("Delete", () => remove(e), "danger"),
      );
    }
    if (kind === "file") td.append(button("Versions", () => versions(e)));
    td.append(...RBShare.actions(e));
    return td;
  }

  // -- actions ---------------------------------------------------------------------------
  async function newFolder() {
    const name = await ask("Name of the new folder", "", "Create");
    if (!name) return;
    try {
      await RB.rpc("files/create_folder_v2", { path: join(cwd, name), autorename: false });
      say(`Folder “${name}” created.`);
      reload();
    } catch (e) {
      fail("Creating the folder", e);
    }
  }

  async function rename(e) {
    const name = await ask(`New name for “${e.name}”`, e.name, "Rename");
    if (!name || name === e.name) return;
    try {
      await RB.rpc("files/move_v2", { from_path: e.path_display, to_path: join(parentOf(e.path_display), name) });
      say(`Renamed to “${name}”.`);
      reload();
    } catch (err) {
      fail("Renaming", err);
    }
  }

  async function move(e) {
    const dest = await ask(`Move “${e.name}” to the folder (a path like /Photos; / for the top)`, cwd || "/", "Move");
    if (dest === null) return;
    const folder = dest.trim().replace(/\/+$/, "");
    const to = join(folder === "" ? "" : folder.startsWith("/") ? folder : join(cwd, folder), e.name);
    try {
      await RB.rpc("files/move_v2", { from_path: e.path_display, to_path: to });
      say(`Moved to “${folder || "/"}”.`);
      reload();
    } catch (err) {
      fail("Moving", err);
    }
  }

  async function remove(e) {
    const ok = await ask("Delete", "", "Delete", `Delete “${e.name}”${kindOf(e) === "folder" ? " and everything in it" : ""}? Deleted files can be restored from “Deleted files”.`);
    if (ok === null) return;
    try {
      await RB.rpc("files/delete_v2", { path: e.path_display });
      say(`Deleted “${e.name}”.`);
      reload();
    } catch (err) {
      fail("Deleting", err);
    }
  }

  async function versions(e) {
    const dlg = $("#versions");
    const body = dlg.querySelector("tbody");
    body.replaceChildren();
    $("#versions-title").textContent = `Versions of ${e.name}`;
    try {
      // by id: the versions it had under earlier names too (a rename keeps the file's id)
      const r = await RB.rpc("files/list_revisions", { path: e.id, mode: "id", limit: 100 });
      r.entries.forEach((v, i) => {
        const actions = el("td", { class: "row-actions" },
          el("a", { class: "button", href: RB.downloadUrl(e.path_display, v.rev), download: e.name, role: "button", text: "Download" }));
        if (i === 0) actions.append(el("span", { text: " current" }));
        else actions.append(button("Restore", async () => {
          try {
            await RB.rpc("files/restore", { path: e.path_display, rev: v.rev });
            dlg.close();
            say(`Restored the version of ${when(v.server_modified)}.`);
            reload();
          } catch (err) {
            fail("Restoring", err);
          }
        }));
        body.append(el("tr", {},
          el("td", { text: when(v.server_modified) }),
          el("td", { text: size(v.size) }),
          actions));
      });
      dlg.showModal();
    } catch (err) {
      fail("Listing the versions", err);
    }
  }

  async function restoreDeleted(e) {
    try {
      const r = await RB.rpc("files/list_revisions", { path: e.path_display, limit: 1 });
      if (!r.entries.length) throw new Error("no version to restore");
      await RB.rpc("files/restore", { path: e.path_display, rev: r.entries[0].rev });
      say(`Restored “${e.name}”.`);
      reload();
    } catch (err) {
      fail(`Restoring “${e.name}” (only files can be restored)`, err);
    }
  }

  async function search(query) {
    const gen = ++generation;
    if (watch) watch.abort();
    searching = query;
    breadcrumbs();
    say("Searching…");
    try {
      const r = await RB.rpc("files/search_v2", { query, options: { path: cwd, filename_only: true, max_results: 1000 } });
      if (gen !== generation) return;
      entries = r.matches.map((m) => m.metadata.metadata);
      say(`${entries.length} found for “${query}”.`);
      render();
    } catch (err) {
      if (gen !== generation) return;
      if (err.status === 404) say("Search is not available on this server.");
      else fail("Searching", err);
    }
  }

  async function spaceUsed() {
    try {
      const r = await RB.rpc("users/get_space_usage", null);
      const alloc = r.allocation && r.allocation.allocated;
      $("#space").textContent = `${size(r.used)} used` + (alloc ? ` of ${size(alloc)}` : "");
    } catch (e) {
      $("#space").textContent = "";
    }
  }

  // -- uploads ---------------------------------------------------------------------------
  const uploadList = $("#uploads ul");

  function uploadRow(path, total) {
    const bar = el("progress", { max: String(Math.max(total, 1)), value: "0" });
    const state = el("span", { class: "state", text: "waiting" });
    const li = el("li", {}, el("span", { class: "upload-name", text: path }), state, bar);
    bar.setAttribute("aria-label", `Upload of ${path}`);
    uploadList.append(li);
    $("#uploads").hidden = false;
    return {
      progress(n) { bar.value = n; state.textContent = `${Math.floor((100 * n) / Math.max(total, 1))} %`; },
      done() { bar.value = Math.max(total, 1); state.textContent = "done"; li.classList.add("done"); },
      failed(why) { state.textContent = `failed: ${why}`; state.classList.add("failed"); },
      retrying(n) { state.textContent = `network error, retrying (${n})…`; },
    };
  }

  const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

  // A call that a network error or a 5xx/429 does not end: retried with backoff.
  async function retrying(fn, ui) {
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn();
      } catch (e) {
        const transient = e.status === 0 || e.status === 429 || e.status >= 500;
        if (!transient || attempt >= RETRY_MAX) throw e;
        ui.retrying(attempt);
        await sleep(Math.min(500 * 2 ** attempt, 15000));
      }
    }
  }

  async function uploadFile(file, path) {
    const ui = uploadRow(path, file.size);
    const commit = { path, mode: "add", autorename: true, client_modified: undefined };
    if (file.lastModified) commit.client_modified = new Date(file.lastModified).toISOString().replace(/\.\d+Z$/, "Z");
    try {
      if (file.size <= BIG_FILE_BYTES) {
        await retrying(() => RB.content("files/upload", commit, file, (n) => ui.progress(n)), ui);
      } else {
        await uploadBig(file, commit, ui);
      }
      ui.done();
    } catch (e) {
      ui.failed(e.summary || e.message);
      throw e;
    }
  }

  // Big files: upload_session start / append_v2 / finish, one chunk at a time; after a
  // network error the chunk is sent again from the offset the server has (the session is
  // kept by the cluster, so the upload resumes instead of starting over).
  async function uploadBig(file, commit, ui) {
    const start = await retrying(() => RB.content("files/upload_session/start", { close: false }, new Blob([])), ui);
    const sid = start.session_id;
    let offset = 0;
    while (offset < file.size) {
      const end = Math.min(offset + CHUNK_BYTES, file.size);
      const at = offset;
      try {
        await retrying(() => RB.content("files/upload_session/append_v2",
          { cursor: { session_id: sid, offset: at }, close: false },
          file.slice(at, end), (n) => ui.progress(at + n)), ui);
        offset = end;
      } catch (e) {
        const correct = e.body && e.body.error && e.body.error.correct_offset;
        if (correct === undefined) throw e;
        offset = correct; // the server already has more (an answer lost): go on from there
      }
      ui.progress(offset);
    }
    await retrying(() => RB.content("files/upload_session/finish",
      { cursor: { session_id: sid, offset: file.size }, commit }, new Blob([])), ui);
  }

  // Files with paths relative to the open folder ("a/b.txt"): their folders are made first.
  async function uploadAll(items) {
    const base = cwd;
    const folders = new Set();
    for (const { rel } of items) {
      const parts = rel.split("/").slice(0, -1);
      for (let i = 1; i <= parts.length; i++) folders.add(parts.slice(0, i).join("/"));
    }
    for (const f of [...folders].sort()) {
      try {
        await RB.rpc("files/create_folder_v2", { path: join(base, f), autorename: false });
      } catch (e) {
        if (!(e.summary || "").startsWith("path/conflict")) fail(`Creating folder ${f}`, e);
      }
    }
    let failed = 0;
    const queue = items.slice();
    const worker = async () => {
      while (queue.length) {
        const { file, rel } = queue.shift();
        try {
          await uploadFile(file, join(base, rel));
        } catch (e) {
          failed++;
        }
      }
    };
    await Promise.all([worker(), worker(), worker()]);
    say(failed ? `${failed} upload(s) failed.` : `Uploaded ${items.length} file(s).`);
    reload();
    spaceUsed();
  }

  function filesOf(list) {
    return [...list].map((file) => ({ file, rel: file.webkitRelativePath || file.name }));
  }

  // A dropped folder: walk it (FileSystemEntry API) into files with relative paths.
  async function walk(entry, prefix, out) {
    if (entry.isFile) {
      const file = await new Promise((ok, no) => entry.file(ok, no));
      out.push({ file, rel: prefix + file.name });
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      const kids = [];
      for (;;) {
        const batch = await new Promise((ok, no) => reader.readEntries(ok, no));
        if (!batch.length) break;
        kids.push(...batch);
      }
      if (!kids.length) out.push({ folderOnly: true, rel: prefix + entry.name });
      for (const k of kids) await walk(k, prefix + entry.name + "/", out);
    }
  }

  async function dropped(dt) {
    const out = [];
    const entriesOf = [...(dt.items || [])].map((i) => (i.webkitGetAsEntry ? i.webkitGetAsEntry() : null));
    if (entriesOf.length && entriesOf.every((x) => x)) {
      for (const en of entriesOf) await walk(en, "", out);
    } else {
      out.push(...filesOf(dt.files));
    }
    const files = out.filter((x) => !x.folderOnly);
    for (const x of out.filter((x) => x.folderOnly)) {
      try {
        await RB.rpc("files/create_folder_v2", { path: join(cwd, x.rel), autorename: false });
      } catch (e) { /* already there */ }
    }
    if (files.length) await uploadAll(files);
    else reload();
  }

  // -- wiring ----------------------------------------------------------------------------
  function wire() {
    $("#new-folder").addEventListener("click", newFolder);
    $("#logout").addEventListener("click", () => RB.logout());
    $("#upload").addEventListener("change", (ev) => {
      const items = filesOf(ev.target.files).map((x) => ({ file: x.file, rel: x.file.name }));
      ev.target.value = "";
      if (items.length) uploadAll(items);
    });
    $("#upload-folder").addEventListener("change", (ev) => {
      const items = filesOf(ev.target.files);
      ev.target.value = "";
      if (items.length) uploadAll(items);
    });
    for (const lbl of document.querySelectorAll(".upload-button")) {
      lbl.tabIndex = 0;
      lbl.setAttribute("role", "button");
      lbl.addEventListener("keydown", (ev) => {
        if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); document.getElementById(lbl.htmlFor).click(); }
      });
    }
    $("#show-deleted").addEventListener("click", (ev) => {
      showDeleted = !showDeleted;
      ev.target.setAttribute("aria-pressed", String(showDeleted));
      load();
    });
    for (const th of document.querySelectorAll("#listing th[data-key]")) {
      th.querySelector("button").addEventListener("click", () => {
        if (sortKey === th.dataset.key) sortDir = -sortDir;
        else { sortKey = th.dataset.key; sortDir = 1; }
        render();
      });
    }
    $("#search-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const q = $("#search").value.trim();
      if (q) search(q);
      else load();
    });
    const zone = $("#drop-zone");
    let depth = 0;
    zone.addEventListener("dragenter", (ev) => { ev.preventDefault(); depth++; zone.classList.add("dragging"); });
    zone.addEventListener("dragleave", () => { if (--depth <= 0) { depth = 0; zone.classList.remove("dragging"); } });
    zone.addEventListener("dragover", (ev) => { ev.preventDefault(); });
    zone.addEventListener("drop", (ev) => {
      ev.preventDefault();
      depth = 0;
      zone.classList.remove("dragging");
      if (ev.dataTransfer) dropped(ev.dataTransfer);
    });
    window.addEventListener("hashchange", () => {
      cwd = pathFromHash();
      load();
    });
  }

  async function main() {
    const s = await RB.session();
    $("#who").textContent = s.email;
    document.body.hidden = false;
    wire();
    RBShare.init({ reload, say });
    cwd = pathFromHash();
    load();
    spaceUsed();
  }

  main().catch(() => {}); // not signed in: RB.session() went to the sign-in page
})();
