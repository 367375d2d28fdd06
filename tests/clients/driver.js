#!/usr/bin/env node
// A real PouchDB 9 client, driven by pytest over JSON lines (see pouch.py).
//
// stdin:  one request per line   {"id": 1, "op": "replicate", ...}
// stdout: one response per line  {"id": 1, "ok": true, "result": ...}
//                                {"id": 1, "ok": false, "error": {name, status, message, ...}}
// Everything else goes to stderr. Requests run concurrently; answers carry their id.
//
// A database reference is either a local name (a memory-adapter PouchDB kept for the
// life of the process, so checkpoints survive between replications) or a remote
// {url, username, password, headers} (HTTP Basic auth on every request, plus headers).
'use strict';

const readline = require('readline');
const nodeFetch = require('node-fetch');
const PouchDB = require('pouchdb-core')
  .plugin(require('pouchdb-adapter-memory'))
  .plugin(require('pouchdb-adapter-http'))
  .plugin(require('pouchdb-replication'));

// PouchDB explains expected 404s with console.info, which would corrupt stdout.
console.log = console.info = console.debug = console.warn = console.error;

const locals = new Map();
const syncs = new Map();
let nextHandle = 1;

function local(name) {
  if (!locals.has(name)) {
    locals.set(name, new PouchDB(name, { adapter: 'memory' }));
  }
  return locals.get(name);
}

// No cookie jar: each request stands alone with its Basic auth, like a fresh device.
function fetchWithHeaders(headers) {
  return (url, options) => {
    for (const [key, value] of Object.entries(headers || {})) {
      options.headers.set(key, value);
    }
    return nodeFetch(url, options);
  };
}

function remote({ url, username, password, headers }) {
  const auth = username === undefined ? undefined : { username, password };
  return new PouchDB(url, {
    adapter: 'http',
    auth,
    skip_setup: true,
    fetch: fetchWithHeaders(headers),
  });
}

function resolve(ref) {
  if (typeof ref === 'string') {
    return local(ref);
  }
  if (ref && typeof ref.url === 'string') {
    return remote(ref);
  }
  throw Object.assign(new Error(`bad database reference: ${JSON.stringify(ref)}`), {
    name: 'bad_request',
    status: 400,
  });
}

// JSON-safe copy: errors become plain objects, buffers become base64.
function plain(value) {
  if (value === undefined) {
    return null;
  }
  const text = JSON.stringify(value, function (key, converted) {
    const raw = this[key];
    if (key === 'stack') {
      return undefined;
    }
    if (raw instanceof Error) {
      return { ...raw, name: raw.name, status: raw.status, message: raw.message };
    }
    if (Buffer.isBuffer(raw)) {
      return raw.toString('base64');
    }
    return converted;
  });
  return JSON.parse(text);
}

async function replicate({ source, target, options = {} }) {
  const { cancel_after_docs: cancelAfter, ...opts } = options;
  const rep = PouchDB.replicate(resolve(source), resolve(target), opts);
  // How many changes the source listed: shows whether a run resumed or started over.
  let received = 0;
  rep.on('checkpoint', (info) => {
    received += 'pending_batch' in info ? 1 : 0;
  });
  if (cancelAfter !== undefined) {
    let written = 0;
    rep.on('change', (info) => {
      written = info.docs_written;
    });
    // Cancel right after a checkpoint is stored, so the next run resumes from it.
    rep.on('checkpoint', (info) => {
      if ('checkpoint' in info && written >= cancelAfter) {
        rep.cancel();
      }
    });
  }
  return { ...(await rep), changes_received: received };
}

function summarize(event, info) {
  if (event === 'change') {
    const { direction, change } = info;
    const ids = (change.docs || []).map((doc) => doc._id);
    return {
      direction,
      docs_read: change.docs_read,
      docs_written: change.docs_written,
      doc_write_failures: change.doc_write_failures,
      ids,
    };
  }
  return info;
}

function syncStart({ local: name, remote: ref, options = {} }) {
  const handle = nextHandle++;
  const { back_off_ms: backOffMs, ...rest } = options;
  const opts = { live: true, retry: true, ...rest };
  if (backOffMs !== undefined) {
    opts.back_off_function = () => backOffMs; // retry at a steady pace, not PouchDB's doubling
  }
  const sync = PouchDB.sync(local(name), resolve(ref), opts);
  const state = { sync, local: name, events: [], pulled: 0, pushed: 0 };
  for (const event of ['change', 'paused', 'active', 'error', 'denied', 'complete']) {
    sync.on(event, (info) => {
      const summary = plain(summarize(event, info));
      if (event === 'change') {
        // docs_written is cumulative per run (and restarts on retry); ids are this batch's.
        state[summary.direction === 'pull' ? 'pulled' : 'pushed'] += summary.ids.length;
      }
      state.events.push({ event, info: summary });
    });
  }
  syncs.set(handle, state);
  return { handle };
}

function syncState(handle) {
  const state = syncs.get(handle);
  if (!state) {
    throw Object.assign(new Error(`no sync ${handle}`), { name: 'not_found', status: 404 });
  }
  return state;
}

// until: {local_has: id, rev?} | {pulled: n} | {pushed: n} | {event: name, count?}
async function holds(state, until) {
  if (until.local_has !== undefined) {
    try {
      const doc = await local(state.local).get(until.local_has);
      return until.rev === undefined || doc._rev === until.rev;
    } catch (err) {
      return false;
    }
  }
  if (until.pulled !== undefined) {
    return state.pulled >= until.pulled;
  }
  if (until.pushed !== undefined) {
    return state.pushed >= until.pushed;
  }
  if (until.event !== undefined) {
    const count = state.events.filter((e) => e.event === until.event).length;
    return count >= (until.count || 1);
  }
  throw Object.assign(new Error('unknown predicate'), { name: 'bad_request', status: 400 });
}

async function syncWait({ handle, until, timeout_ms: timeoutMs = 10000 }) {
  const state = syncState(handle);
  const deadline = Date.now() + timeoutMs;
  while (!(await holds(state, until))) {
    if (Date.now() > deadline) {
      const message = `sync ${handle}: ${JSON.stringify(until)} not reached in ${timeoutMs} ms`;
      throw Object.assign(new Error(message), { name: 'timeout', status: 408, events: state.events });
    }
    await new Promise((done) => setTimeout(done, 50));
  }
  return { pulled: state.pulled, pushed: state.pushed, events: state.events };
}

async function syncCancel({ handle }) {
  const state = syncState(handle);
  const completed = new Promise((done) => state.sync.once('complete', done));
  state.sync.cancel();
  await Promise.race([completed, new Promise((done) => setTimeout(done, 5000))]);
  syncs.delete(handle);
  return { pulled: state.pulled, pushed: state.pushed, events: state.events };
}

const ops = {
  open: ({ db }) => resolve(db).info(),
  info: ({ db }) => resolve(db).info(),
  destroy: async ({ db }) => {
    const result = await resolve(db).destroy();
    if (typeof db === 'string') {
      locals.delete(db);
    }
    return result;
  },
  put: ({ db, doc, options = {} }) => resolve(db).put(doc, options),
  bulk_docs: ({ db, docs, options = {} }) => resolve(db).bulkDocs(docs, options),
  get: ({ db, docid, options = {} }) => resolve(db).get(docid, options),
  remove: ({ db, docid, rev }) => resolve(db).remove(docid, rev),
  all_docs: ({ db, options = {} }) => resolve(db).allDocs(options),
  bulk_get: ({ db, docs, options = {} }) => resolve(db).bulkGet({ docs, ...options }),
  changes: ({ db, options = {} }) => resolve(db).changes(options),
  put_attachment: ({ db, docid, name, rev, data, content_type: type }) =>
    resolve(db).putAttachment(docid, name, rev, Buffer.from(data, 'base64'), type),
  get_attachment: async ({ db, docid, name, options = {} }) =>
    (await resolve(db).getAttachment(docid, name, options)).toString('base64'),
  replicate,
  sync_start: syncStart,
  sync_wait: syncWait,
  sync_cancel: syncCancel,
};

function reply(message) {
  process.stdout.write(JSON.stringify(message) + '\n');
}

// PouchDB's getAttachment over HTTP rejects with the raw fetch Response.
async function describe(err) {
  if (err && typeof err.text === 'function' && typeof err.status === 'number') {
    const text = await err.text();
    let body = {};
    try {
      body = JSON.parse(text);
    } catch (parseError) {
      body = { reason: text };
    }
    return { ...body, name: body.error, status: err.status, message: body.reason };
  }
  return plain({ err }).err || { name: 'unknown', message: String(err) };
}

async function handle(line) {
  let request;
  try {
    request = JSON.parse(line);
  } catch (err) {
    console.error(`driver: ignoring a line that is not JSON: ${line}`);
    return;
  }
  const { id, op, ...args } = request;
  try {
    if (!(op in ops)) {
      throw Object.assign(new Error(`unknown op ${op}`), { name: 'bad_request', status: 400 });
    }
    reply({ id, ok: true, result: plain(await ops[op](args)) });
  } catch (err) {
    reply({ id, ok: false, error: await describe(err) });
  }
}

const pending = new Set();
readline
  .createInterface({ input: process.stdin })
  .on('line', (line) => {
    if (line.trim()) {
      const task = handle(line);
      pending.add(task);
      task.finally(() => pending.delete(task));
    }
  })
  // stdin closed: answer what is in flight, then stop (live syncs would keep node up).
  .on('close', async () => {
    await Promise.allSettled([...pending]);
    process.exit(0);
  });
