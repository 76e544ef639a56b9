// Sharing in the file browser (issue 14, the sharing part). Vanilla JS, no build step; every
// call is an ordinary /2/sharing/... route through api.js (session cookie + CSRF header), the
// same routes the SDK uses. Names, emails and URLs are only ever inserted as text.
//
// What it adds to files.html (files.js asks for it through `RBShare`):
// - `RBShare.actions(entry)`: the row buttons "Share" (folders) and "Share link" (files and
//   folders);
// - the "Share" dialog (#share): invite by email as editor or viewer (`share_folder` first
//   when the folder is not shared yet, then `add_folder_member`), the members and invitees
//   with their access (`list_folder_members`); the owner changes a member's access
//   (`update_folder_member`), removes a member (`remove_folder_member`) or "Unshare"s
//   (`unshare_folder`); a member "Leave"s (`relinquish_folder_membership`);
// - the "Share link" dialog (#link): the item's live link if it has one, else a form to create
//   one (`create_shared_link_with_settings`, optional expiry date and password); "Copy link",
//   "Revoke" (`revoke_shared_link`);
// - "Shared with you" (#invitations): folders shared with me that I have not added
//   (`list_mountable_folders`), each with "Accept" (`mount_folder`); read on every listing and
//   every INVITATIONS_POLL_MS;
// - "Shared links" (#links): every link of mine (`list_shared_links`) with Copy link / Revoke;
// - `RBShare.readOnly(path)`: whether the open folder is inside a folder shared with me as a
//   viewer (files.js then hides its write controls; the server refuses such writes anyway).
//
// After a change that alters the listing, `onChange` (files.js's reload) is called.
"use strict";

const RBShare = (function () {
  const $ = (sel) => document.querySelector(sel);
  let onChange = () => {};
  let say = () => {};
  // An invitation changes no folder of mine, so no long-poll wakes for it: "Shared with you"
  // is read again on every listing and at this period while the page is visible.
  const INVITATIONS_POLL_MS = 30_000;

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

  // A Dropbox error summary in words a person reads (the tag stays, for whoever reports it).
  const WORDS = {
    no_write_permission: "you can only view this shared folder",
    inside_shared_folder: "a folder inside a shared folder cannot be shared on its own",
    email_unverified: "your email is not verified",
    cant_share_outside_team: "sharing is not allowed with that address",
    no_permission: "only the folder's owner can do that",
    shared_link_already_exists: "this item already has a link",
    shared_link_not_found: "the link no longer exists",
    invalid_settings: "the expiry must be in the future",
  };

  function why(e) {
    const s = (e && (e.summary || e.message)) || String(e);
    for (const [tag, words] of Object.entries(WORDS)) if (s.includes(tag)) return `${words} (${s})`;
    return s;
  }

  async function copy(text, note) {
    try {
      await navigator.clipboard.writeText(text);
    } catch (e) {
      // no clipboard permission (or not a secure context): select a field holding it instead
      const t = el("textarea", { class: "visually-hidden", readonly: "" });
      t.value = text;
      document.body.append(t);
      t.select();
      document.execCommand("copy");
      t.remove();
    }
    note.textContent = "Link copied.";
  }

  // -- the Share dialog ------------------------------------------------------------------
  const share = { entry: null, sfid: "", access: "" };

  function shareNote(text) {
    $("#share-note").textContent = text;
  }

  async function openShare(entry) {
    share.entry = entry;
    share.sfid = entry.shared_folder_id || "";
    share.access = "";
    $("#share-title").textContent = `Share ${entry.name}`;
    shareNote("");
    $("#share-email").value = "";
    $("#share-members tbody").replaceChildren();
    $("#share-dialog-actions").hidden = true;
    $("#share-invite").hidden = false;
    $("#share").showModal();
    $("#share-email").focus();
    await members();
  }

  async function members() {
    const body = $("#share-members tbody");
    $("#share-leave").hidden = $("#share-unshare").hidden = true;
    if (!share.sfid) {
      body.replaceChildren();
      $("#share-members").hidden = true;
      shareNote("Not shared yet: invite someone to share this folder.");
      return;
    }
    try {
      const md = await RB.rpc("sharing/get_folder_metadata", { shared_folder_id: share.sfid });
      share.access = md.access_type[".tag"];
      let r = await RB.rpc("sharing/list_folder_members", { shared_folder_id: share.sfid });
      const users = r.users.slice();
      const invitees = r.invitees.slice();
      while (r.cursor) {
        r = await RB.rpc("sharing/list_folder_members/continue", { cursor: r.cursor });
        users.push(...r.users);
        invitees.push(...r.invitees);
      }
      const owner = share.access === "owner";
      const rows = [];
      for (const u of users) {
        const who = { ".tag": "dropbox_id", dropbox_id: u.user.account_id };
        rows.push(memberRow(`${u.user.display_name} <${u.user.email}>`, u.access_type[".tag"], owner, who, u.user.email));
      }
      for (const i of invitees) {
        const who = { ".tag": "email", email: i.invitee.email };
        rows.push(memberRow(`${i.invitee.email} (invited)`, i.access_type[".tag"], owner, who, i.invitee.email));
      }
      body.replaceChildren(...rows);
      $("#share-members").hidden = false;
      $("#share-invite").hidden = share.access === "viewer"; // editors invite too (server rule)
      $("#share-leave").hidden = owner;
      $("#share-unshare").hidden = !owner;
      $("#share-dialog-actions").hidden = false;
    } catch (e) {
      shareNote(`Listing the members failed: ${why(e)}`);
    }
  }

  function memberRow(label, access, owner, selector, email) {
    const cell = el("td", { class: "access" });
    if (owner && access !== "owner") {
      const sel = el("select", { "aria-label": `Access of ${email}` },
        el("option", { value: "editor", text: "editor" }),
        el("option", { value: "viewer", text: "viewer" }));
      sel.value = access;
      sel.addEventListener("change", () => changeAccess(selector, email, sel.value));
      cell.append(sel);
    } else {
      cell.textContent = access;
    }
    const actions = el("td", { class: "row-actions" });
    if (owner && access !== "owner") actions.append(button("Remove", () => removeMember(selector, email), "danger"));
    return el("tr", {}, el("td", { class: "member", text: label }), cell, actions);
  }

  async function invite(ev) {
    ev.preventDefault();
    const email = $("#share-email").value.trim();
    const level = $("#share-access").value;
    if (!email) return;
    try {
      if (!share.sfid) {
        shareNote("Sharing the folder…");
        let r = await RB.rpc("sharing/share_folder", { path: share.entry.path_display });
        let job = "";
        while (r[".tag"] === "async_job_id" || r[".tag"] === "in_progress") {
          job = r.async_job_id || job;
          await new Promise((ok) => setTimeout(ok, 500));
          r = await RB.rpc("sharing/check_share_job_status", { async_job_id: job });
        }
        if (r[".tag"] === "failed") throw new Error(JSON.stringify(r.failed));
        share.sfid = r.shared_folder_id;
        onChange();
      }
      await RB.rpc("sharing/add_folder_member", {
        shared_folder_id: share.sfid,
        members: [{ member: { ".tag": "email", email }, access_level: { ".tag": level } }],
      });
      $("#share-email").value = "";
      await members();
      shareNote(`Invited ${email} as ${level}.`);
    } catch (e) {
      shareNote(`Inviting ${email} failed: ${why(e)}`);
    }
  }

  async function changeAccess(selector, email, level) {
    try {
      await RB.rpc("sharing/update_folder_member", {
        shared_folder_id: share.sfid, member: selector, access_level: { ".tag": level },
      });
      shareNote(`${email} is now ${level}.`);
    } catch (e) {
      shareNote(`Changing the access of ${email} failed: ${why(e)}`);
    }
    await members();
  }

  async function removeMember(selector, email) {
    try {
      await RB.rpc("sharing/remove_folder_member", {
        shared_folder_id: share.sfid, member: selector, leave_a_copy: false,
      });
      await members();
      shareNote(`Removed ${email}.`);
    } catch (e) {
      shareNote(`Removing ${email} failed: ${why(e)}`);
    }
  }

  async function leave() {
    try {
      await RB.rpc("sharing/relinquish_folder_membership", { shared_folder_id: share.sfid, leave_a_copy: false });
      $("#share").close();
      say(`You left “${share.entry.name}”.`);
      onChange();
    } catch (e) {
      shareNote(`Leaving failed: ${why(e)}`);
    }
  }

  async function unshare() {
    try {
      await RB.rpc("sharing/unshare_folder", { shared_folder_id: share.sfid, leave_a_copy: false });
      $("#share").close();
      say(`“${share.entry.name}” is no longer shared.`);
      onChange();
    } catch (e) {
      shareNote(`Unsharing failed: ${why(e)}`);
    }
  }

  // -- the Share link dialog -------------------------------------------------------------
  const link = { entry: null, url: "" };

  function linkNote(text) {
    $("#link-note").textContent = text;
  }

  function about(md) {
    const parts = [];
    const vis = md.link_permissions && md.link_permissions.resolved_visibility;
    parts.push(vis && vis[".tag"] === "password" ? "Anyone with the link and the password" : "Anyone with the link");
    parts.push(md.expires ? `until ${new Date(md.expires).toLocaleString()}` : "with no expiry");
    return parts.join(", ") + ".";
  }

  function showLink(md) {
    link.url = md ? md.url : "";
    $("#link-form").hidden = !!md;
    $("#link-made").hidden = !md;
    $("#link-url").value = link.url;
    $("#link-about").textContent = md ? about(md) : "";
  }

  async function openLink(entry) {
    link.entry = entry;
    $("#link-title").textContent = `Share link to ${entry.name}`;
    $("#link-expires").value = "";
    $("#link-password").value = "";
    linkNote("");
    showLink(null);
    $("#link").showModal();
    try {
      const r = await RB.rpc("sharing/list_shared_links", { path: entry.path_display, direct_only: true });
      const live = r.links.find((l) => (l.path_lower || "") === entry.path_lower) || r.links[0];
      showLink(live || null);
    } catch (e) {
      linkNote(`Looking for a link failed: ${why(e)}`);
    }
    (link.url ? $("#link-copy") : $("#link-expires")).focus();
  }

  async function createLink(ev) {
    ev.preventDefault();
    const settings = { requested_visibility: { ".tag": "public" } };
    const pw = $("#link-password").value;
    if (pw) {
      settings.requested_visibility = { ".tag": "password" };
      settings.link_password = pw;
    }
    const day = $("#link-expires").value; // yyyy-mm-dd: the link ends at that day's end (UTC)
    if (day) settings.expires = `${day}T23:59:59Z`;
    try {
      const md = await RB.rpc("sharing/create_shared_link_with_settings", { path: link.entry.path_display, settings });
      showLink(md);
      linkNote("Link created.");
      $("#link-copy").focus();
      refreshLinks();
    } catch (e) {
      const existing = e.body && e.body.error && e.body.error.shared_link_already_exists;
      if (existing && existing.metadata) {
        showLink(existing.metadata);
        linkNote("This item already has a link (revoke it to make one with other settings).");
      } else {
        linkNote(`Creating the link failed: ${why(e)}`);
      }
    }
  }

  async function revoke(url, note) {
    try {
      await RB.rpc("sharing/revoke_shared_link", { url });
      note.textContent = "Link revoked: it no longer opens anything.";
      return true;
    } catch (e) {
      note.textContent = `Revoking failed: ${why(e)}`;
      return false;
    }
  }

  // -- Shared links (every link of mine) -------------------------------------------------
  async function refreshLinks() {
    const section = $("#links");
    if (section.hidden) return;
    const body = $("#links tbody");
    try {
      let r = await RB.rpc("sharing/list_shared_links", {});
      const all = r.links.slice();
      while (r.has_more) {
        r = await RB.rpc("sharing/list_shared_links", { cursor: r.cursor });
        all.push(...r.links);
      }
      body.replaceChildren(...all.map((md) => el("tr", {},
        el("td", { class: "name", text: md.path_lower || md.name }),
        el("td", { class: "url", text: md.url }),
        el("td", { text: md.expires ? new Date(md.expires).toLocaleString() : "never" }),
        el("td", { class: "row-actions" },
          button("Copy link", () => copy(md.url, $("#links-note"))),
          button("Revoke", async () => { if (await revoke(md.url, $("#links-note"))) refreshLinks(); }, "danger")))));
      $("#links-empty").hidden = all.length > 0;
    } catch (e) {
      $("#links-note").textContent = `Listing your links failed: ${why(e)}`;
    }
  }

  function toggleLinks(ev) {
    const section = $("#links");
    section.hidden = !section.hidden;
    ev.currentTarget.setAttribute("aria-pressed", String(!section.hidden));
    refreshLinks();
  }

  // -- Shared with you (invitations) -----------------------------------------------------
  async function invitations() {
    const section = $("#invitations");
    const list = $("#invitations ul");
    try {
      let r = await RB.rpc("sharing/list_mountable_folders", { limit: 100 });
      const all = r.entries.slice();
      while (r.cursor) {
        r = await RB.rpc("sharing/list_mountable_folders/continue", { cursor: r.cursor });
        all.push(...r.entries);
      }
      list.replaceChildren(...all.map((f) => {
        const from = f.owner_display_names && f.owner_display_names.length ? ` from ${f.owner_display_names.join(", ")}` : "";
        const li = el("li", {}, el("span", { class: "invite-name", text: f.name }),
          el("span", { class: "invite-from", text: `${from} (${f.access_type[".tag"]})` }));
        li.append(" ", button("Accept", async () => {
          try {
            const md = await RB.rpc("sharing/mount_folder", { shared_folder_id: f.shared_folder_id });
            say(`“${f.name}” added${md.path_display ? ` as ${md.path_display}` : ""}.`);
            li.remove();
            section.hidden = list.children.length === 0;
            onChange();
          } catch (e) {
            say(`Accepting “${f.name}” failed: ${why(e)}`);
          }
        }));
        return li;
      }));
      section.hidden = all.length === 0;
    } catch (e) {
      section.hidden = true; // no sharing on this server: nothing to offer
    }
  }

  // -- read-only folders -----------------------------------------------------------------
  async function readOnly(path) {
    if (!path) return false;
    try {
      const md = await RB.rpc("files/get_metadata", { path });
      return !!(md.sharing_info && md.sharing_info.read_only);
    } catch (e) {
      return false;
    }
  }

  function actions(e) {
    const out = [];
    if (e[".tag"] === "folder") out.push(button("Share", () => openShare(e)));
    out.push(button("Share link", () => openLink(e)));
    return out;
  }

  function init(opts) {
    onChange = opts.reload;
    say = opts.say;
    $("#share-invite").addEventListener("submit", invite);
    $("#share-leave").addEventListener("click", leave);
    $("#share-unshare").addEventListener("click", unshare);
    $("#link-form").addEventListener("submit", createLink);
    $("#link-copy").addEventListener("click", () => copy(link.url, $("#link-note")));
    $("#link-revoke").addEventListener("click", async () => {
      if (await revoke(link.url, $("#link-note"))) {
        showLink(null);
        refreshLinks();
      }
    });
    $("#show-links").addEventListener("click", toggleLinks);
    invitations();
    setInterval(() => { if (!document.hidden) invitations(); }, INVITATIONS_POLL_MS);
  }

  return { init, actions, invitations, readOnly, why };
})();
