// Every route of the npm `dropbox` SDK (10.x, on node) that raftbox serves (or is to serve),
// one check each. Run by tests/eco/test_js_sdk.py inside the harness's namespace
// (api./content./notify.dropboxapi.com are raftbox):
//
//     node js_sdk_routes.js SDK_DIR TOKEN SPARE_TOKEN
//
// Prints one JSON line per check: {"check", "routes", "ok", "error"}; a check never stops the
// run (the test decides which must pass). SPARE_TOKEN is revoked by the last check. The test CA
// is trusted through NODE_EXTRA_CA_CERTS (set by the harness).
'use strict';

const path = require('path');
const assert = require('assert');

const [sdkDir, token, spare] = process.argv.slice(2);
const { Dropbox, DropboxResponseError } = require(path.join(sdkDir, 'node_modules', 'dropbox'));

const CHECKS = [];
function check(name, routes, fn) {
  CHECKS.push({ name, routes, fn });
}

async function waitJob(poll, asyncJobId, timeoutMs = 60000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = (await poll({ async_job_id: asyncJobId })).result;
    if (r['.tag'] !== 'in_progress') return r;
    if (Date.now() > deadline) throw new Error(`job ${asyncJobId} still in progress`);
    await new Promise((res) => setTimeout(res, 100));
  }
}

async function closedSessions(dbx, bodies) {
  const entries = [];
  for (const [p, body] of Object.entries(bodies)) {
    const sid = (await dbx.filesUploadSessionStart({ contents: Buffer.from(body), close: true }))
      .result.session_id;
    entries.push({ cursor: { session_id: sid, offset: Buffer.byteLength(body) }, commit: { path: p } });
  }
  return entries;
}

check('current_account', ['users/get_current_account'], async (dbx) => {
  const a = (await dbx.usersGetCurrentAccount()).result;
  assert.ok(a.account_id.startsWith('dbid:'), a.account_id);
  assert.ok(a.email.endsWith('@example.test'), a.email);
});

check('check_user', ['check/user'], async (dbx) => {
  assert.strictEqual((await dbx.checkUser({ query: 'ping' })).result.result, 'ping');
});

check('create_folder', ['files/create_folder_v2', 'files/create_folder'], async (dbx) => {
  const m = (await dbx.filesCreateFolderV2({ path: '/js/dir' })).result.metadata;
  assert.strictEqual(m.path_display, '/js/dir');
  const v1 = (await dbx.filesCreateFolder({ path: '/js/dir1' })).result;
  assert.strictEqual(v1.path_lower, '/js/dir1');
});

check('upload_download', ['files/upload', 'files/get_metadata', 'files/download'], async (dbx) => {
  const m = (await dbx.filesUpload({ path: '/js/a.txt', contents: Buffer.from('hello raftbox'),
    mode: { '.tag': 'overwrite' } })).result;
  assert.strictEqual(m.size, 13);
  const got = (await dbx.filesGetMetadata({ path: '/js/a.txt' })).result;
  assert.strictEqual(got['.tag'], 'file');
  assert.strictEqual(got.rev, m.rev);
  const d = (await dbx.filesDownload({ path: '/js/a.txt' })).result;
  assert.strictEqual(Buffer.from(d.fileBinary).toString(), 'hello raftbox');
  assert.strictEqual(d.content_hash, m.content_hash);
});

check('list_folder', ['files/list_folder', 'files/list_folder/continue',
  'files/list_folder/get_latest_cursor'], async (dbx) => {
  for (let i = 0; i < 3; i++) {
    await dbx.filesUpload({ path: `/js/list/${i}.txt`, contents: Buffer.from(String(i)) });
  }
  let r = (await dbx.filesListFolder({ path: '/js/list', limit: 1 })).result;
  const names = r.entries.map((e) => e.name);
  while (r.has_more) {
    r = (await dbx.filesListFolderContinue({ cursor: r.cursor })).result;
    names.push(...r.entries.map((e) => e.name));
  }
  assert.deepStrictEqual(names.sort(), ['0.txt', '1.txt', '2.txt']);
  const cursor = (await dbx.filesListFolderGetLatestCursor({ path: '/js/list' })).result.cursor;
  await dbx.filesUpload({ path: '/js/list/3.txt', contents: Buffer.from('3') });
  r = (await dbx.filesListFolderContinue({ cursor })).result;
  assert.deepStrictEqual(r.entries.map((e) => e.name), ['3.txt']);
});

check('longpoll', ['files/list_folder/longpoll'], async (dbx) => {
  const cursor = (await dbx.filesListFolderGetLatestCursor({ path: '/js' })).result.cursor;
  await dbx.filesUpload({ path: '/js/poke.txt', contents: Buffer.from('poke') });
  const r = (await dbx.filesListFolderLongpoll({ cursor, timeout: 30 })).result;
  assert.strictEqual(r.changes, true);
});

check('upload_session', ['files/upload_session/start', 'files/upload_session/append_v2',
  'files/upload_session/finish'], async (dbx) => {
  const sid = (await dbx.filesUploadSessionStart({ contents: Buffer.from('abc') })).result.session_id;
  await dbx.filesUploadSessionAppendV2({ cursor: { session_id: sid, offset: 3 },
    contents: Buffer.from('def') });
  const m = (await dbx.filesUploadSessionFinish({ cursor: { session_id: sid, offset: 6 },
    commit: { path: '/js/session.txt' }, contents: Buffer.from('gh') })).result;
  assert.strictEqual(m.size, 8);
  const d = (await dbx.filesDownload({ path: '/js/session.txt' })).result;
  assert.strictEqual(Buffer.from(d.fileBinary).toString(), 'abcdefgh');
});

check('finish_batch_v2', ['files/upload_session/finish_batch_v2'], async (dbx) => {
  const entries = await closedSessions(dbx, { '/js/fb2/a': 'a', '/js/fb2/b': 'bb' });
  const r = (await dbx.filesUploadSessionFinishBatchV2({ entries })).result;
  assert.deepStrictEqual(r.entries.map((e) => [e['.tag'], e.size]), [['success', 1], ['success', 2]]);
});

check('finish_batch_v1', ['files/upload_session/finish_batch',
  'files/upload_session/finish_batch/check'], async (dbx) => {
  const entries = await closedSessions(dbx, { '/js/fb1/a': 'a', '/js/fb1/b': 'bb' });
  let r = (await dbx.filesUploadSessionFinishBatch({ entries })).result;
  if (r['.tag'] === 'async_job_id') {
    r = await waitJob((a) => dbx.filesUploadSessionFinishBatchCheck(a), r.async_job_id);
  }
  assert.strictEqual(r['.tag'], 'complete', JSON.stringify(r));
  assert.deepStrictEqual(r.entries.map((e) => [e['.tag'], e.size]), [['success', 1], ['success', 2]]);
});

check('relocate_v2', ['files/copy_v2', 'files/move_v2', 'files/delete_v2'], async (dbx) => {
  await dbx.filesUpload({ path: '/js/rel/a.txt', contents: Buffer.from('rel') });
  let m = (await dbx.filesCopyV2({ from_path: '/js/rel/a.txt', to_path: '/js/rel/b.txt' })).result;
  assert.strictEqual(m.metadata.path_display, '/js/rel/b.txt');
  m = (await dbx.filesMoveV2({ from_path: '/js/rel/b.txt', to_path: '/js/rel/c.txt' })).result;
  assert.strictEqual(m.metadata.path_display, '/js/rel/c.txt');
  m = (await dbx.filesDeleteV2({ path: '/js/rel/c.txt' })).result;
  assert.strictEqual(m.metadata.path_display, '/js/rel/c.txt');
});

check('relocate_v1', ['files/copy', 'files/move', 'files/delete'], async (dbx) => {
  await dbx.filesUpload({ path: '/js/v1/a.txt', contents: Buffer.from('v1') });
  let m = (await dbx.filesCopy({ from_path: '/js/v1/a.txt', to_path: '/js/v1/b.txt' })).result;
  assert.strictEqual(m['.tag'], 'file');
  assert.strictEqual(m.path_display, '/js/v1/b.txt');
  m = (await dbx.filesMove({ from_path: '/js/v1/b.txt', to_path: '/js/v1/c.txt' })).result;
  assert.strictEqual(m.path_display, '/js/v1/c.txt');
  m = (await dbx.filesDelete({ path: '/js/v1/c.txt' })).result;
  assert.strictEqual(m.path_display, '/js/v1/c.txt');
  try {
    await dbx.filesDelete({ path: '/js/v1/c.txt' });
    throw new Error('deleting a deleted file succeeded');
  } catch (e) {
    if (!(e instanceof DropboxResponseError)) throw e;
    assert.strictEqual(e.status, 409);
    assert.ok(e.error.error_summary.startsWith('path_lookup/not_found/'), e.error.error_summary);
  }
});

check('revisions', ['files/list_revisions', 'files/restore'], async (dbx) => {
  const first = (await dbx.filesUpload({ path: '/js/rev.txt', contents: Buffer.from('one') })).result;
  await dbx.filesUpload({ path: '/js/rev.txt', contents: Buffer.from('two'), mode: { '.tag': 'overwrite' } });
  const r = (await dbx.filesListRevisions({ path: '/js/rev.txt' })).result;
  assert.strictEqual(r.entries.length, 2);
  await dbx.filesRestore({ path: '/js/rev.txt', rev: first.rev });
  const d = (await dbx.filesDownload({ path: '/js/rev.txt' })).result;
  assert.strictEqual(Buffer.from(d.fileBinary).toString(), 'one');
});

check('space_usage', ['users/get_space_usage'], async (dbx) => {
  const u = (await dbx.usersGetSpaceUsage()).result;
  assert.ok(u.used >= 0, JSON.stringify(u));
});

check('search', ['files/search_v2', 'files/search/continue_v2'], async (dbx) => {
  for (let i = 0; i < 3; i++) {
    await dbx.filesUpload({ path: `/js/search/needle${i}.txt`, contents: Buffer.from('s') });
  }
  let r = (await dbx.filesSearchV2({ query: 'needle', options: { path: '/js/search', max_results: 2 } })).result;
  const found = r.matches.map((m) => m.metadata.metadata.name);
  while (r.has_more) {
    r = (await dbx.filesSearchContinueV2({ cursor: r.cursor })).result;
    found.push(...r.matches.map((m) => m.metadata.metadata.name));
  }
  assert.deepStrictEqual(found.sort(), ['needle0.txt', 'needle1.txt', 'needle2.txt']);
});

check('temporary_link', ['files/get_temporary_link'], async (dbx) => {
  await dbx.filesUpload({ path: '/js/link.txt', contents: Buffer.from('linked') });
  const r = (await dbx.filesGetTemporaryLink({ path: '/js/link.txt' })).result;
  const got = await fetch(r.link);
  assert.strictEqual(got.status, 200);
  assert.strictEqual(await got.text(), 'linked');
});

check('relocation_batches', ['files/copy_batch_v2', 'files/copy_batch/check_v2',
  'files/move_batch_v2', 'files/move_batch/check_v2'], async (dbx) => {
  await dbx.filesUpload({ path: '/js/cb/a.txt', contents: Buffer.from('c') });
  let r = (await dbx.filesCopyBatchV2({ entries: [{ from_path: '/js/cb/a.txt', to_path: '/js/cb/b.txt' }] })).result;
  if (r['.tag'] === 'async_job_id') r = await waitJob((a) => dbx.filesCopyBatchCheckV2(a), r.async_job_id);
  assert.strictEqual(r.entries[0]['.tag'], 'success', JSON.stringify(r));
  r = (await dbx.filesMoveBatchV2({ entries: [{ from_path: '/js/cb/b.txt', to_path: '/js/cb/c.txt' }] })).result;
  if (r['.tag'] === 'async_job_id') r = await waitJob((a) => dbx.filesMoveBatchCheckV2(a), r.async_job_id);
  assert.strictEqual(r.entries[0]['.tag'], 'success', JSON.stringify(r));
});

check('delete_batch', ['files/delete_batch', 'files/delete_batch/check'], async (dbx) => {
  await dbx.filesUpload({ path: '/js/db/a.txt', contents: Buffer.from('d') });
  let r = (await dbx.filesDeleteBatch({ entries: [{ path: '/js/db/a.txt' }] })).result;
  if (r['.tag'] === 'async_job_id') r = await waitJob((a) => dbx.filesDeleteBatchCheck(a), r.async_job_id);
  assert.strictEqual(r.entries[0]['.tag'], 'success', JSON.stringify(r));
});

check('create_folder_batch', ['files/create_folder_batch', 'files/create_folder_batch/check'], async (dbx) => {
  let r = (await dbx.filesCreateFolderBatch({ paths: ['/js/cfb/a', '/js/cfb/b'], force_async: true })).result;
  if (r['.tag'] === 'async_job_id') r = await waitJob((a) => dbx.filesCreateFolderBatchCheck(a), r.async_job_id);
  assert.deepStrictEqual(r.entries.map((e) => e['.tag']), ['success', 'success']);
});

check('thumbnails', ['files/get_thumbnail_v2', 'files/get_thumbnail_batch'], async (dbx) => {
  // A 64x64 PNG made with zlib (no image library needed).
  const zlib = require('zlib');
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (buf) => {
    let c = 0xffffffff;
    for (const b of buf) c = crcTable[(c ^ b) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (kind, data) => {
    const len = Buffer.alloc(4); len.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(kind), data]);
    const c = Buffer.alloc(4); c.writeUInt32BE(crc(body));
    return Buffer.concat([len, body, c]);
  };
  const w = 64, h = 64;
  const ihdr = Buffer.alloc(13); ihdr.writeUInt32BE(w, 0); ihdr.writeUInt32BE(h, 4);
  ihdr[8] = 8; ihdr[9] = 2;
  const raw = Buffer.concat(Array.from({ length: h }, () => Buffer.concat([Buffer.from([0]), Buffer.alloc(w * 3, 0x80)])));
  const png = Buffer.concat([Buffer.from('89504e470d0a1a0a', 'hex'), chunk('IHDR', ihdr),
    chunk('IDAT', zlib.deflateSync(raw)), chunk('IEND', Buffer.alloc(0))]);
  await dbx.filesUpload({ path: '/js/pic.png', contents: png });
  const t = (await dbx.filesGetThumbnailV2({ resource: { '.tag': 'path', path: '/js/pic.png' } })).result;
  assert.ok(Buffer.from(t.fileBinary).length > 0);
  const b = (await dbx.filesGetThumbnailBatch({ entries: [{ path: '/js/pic.png' }] })).result;
  assert.strictEqual(b.entries[0]['.tag'], 'success', JSON.stringify(b).slice(0, 300));
});

check('unknown_route', ['unknown route'], async (dbx) => {
  // A route raftbox does not serve: an error the SDK reads, with Dropbox's text.
  try {
    await dbx.usersFeaturesGetValues({ features: [{ '.tag': 'paper_as_files' }] });
    throw new Error('users/features/get_values answered');
  } catch (e) {
    if (!(e instanceof DropboxResponseError)) throw e;
    assert.strictEqual(e.status, 400);
    assert.ok(String(e.error).includes('Unknown API function'), String(e.error));
  }
});

check('revoke', ['auth/token/revoke'], async () => {
  const other = new Dropbox({ accessToken: spare });
  await other.usersGetCurrentAccount();
  await other.authTokenRevoke();
  try {
    await other.usersGetCurrentAccount();
    throw new Error('a revoked token still works');
  } catch (e) {
    if (!(e instanceof DropboxResponseError)) throw e;
    assert.strictEqual(e.status, 401);
    assert.strictEqual(e.error.error['.tag'], 'invalid_access_token');
  }
});

async function main() {
  const dbx = new Dropbox({ accessToken: token });
  for (const { name, routes, fn } of CHECKS) {
    const out = { check: name, routes, ok: true, error: null };
    try {
      await fn(dbx);
    } catch (e) {
      out.ok = false;
      const detail = e instanceof DropboxResponseError ? ` ${e.status} ${JSON.stringify(e.error).slice(0, 400)}` : '';
      out.error = `${e.name}: ${String(e.message).slice(0, 400)}${detail}`;
      out.trace = String(e.stack).slice(0, 1500);
    }
    console.log(JSON.stringify(out));
  }
}

main().catch((e) => { console.error(e); process.exit(1); });
