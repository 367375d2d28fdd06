#!/usr/bin/env node
// The PouchDB 9 client of the benchmark (python -m bench drives it over JSON lines).
//
// stdin:  one request per line   {"id": 1, "op": "pull", ...}
// stdout: one answer per line    {"id": 1, "ok": true, "result": ...} | {"id": 1, "ok": false, "error": ...}
// Requests are handled one at a time, in order, so timings never overlap.
//
// Local databases use the memory adapter and live as long as the process, so a second
// pull of the same local database resumes from its checkpoint (the no-op and incremental
// pulls). Remote databases go over node-fetch, which asks for gzip (Accept-Encoding:
// gzip,deflate) and inflates answers, as a browser would; a counting keep-alive agent
// records the bytes on the wire and how many answers came back compressed.
'use strict';

const path = require('path');
const http = require('http');
const readline = require('readline');
const { performance } = require('perf_hooks');

const MODULES = path.join(__dirname, '..', 'tests', 'clients', 'node_modules');
const need = (name) => require(path.join(MODULES, name));
const nodeFetch = need('node-fetch');
const PouchDB = need('pouchdb-core')
  .plugin(need('pouchdb-adapter-memory'))
  .plugin(need('pouchdb-adapter-http'))
  .plugin(need('pouchdb-replication'));

// PouchDB explains expected 404s with console.info, which would corrupt stdout.
console.log = console.info = console.debug = console.warn = console.error;

const agent = new http.Agent({ keepAlive: true, maxSockets: 6 });
const sockets = new Set();
const createConnection = agent.createConnection.bind(agent);
agent.createConnection = (...args) => {
  const socket = createConnection(...args);
  sockets.add(socket);
  return socket;
};

const wire = { requests: 0, gzipped: 0, bytesIn: 0, bytesOut: 0 };
const byPath = new Map();

function socketBytes() {
  let bytesIn = 0;
  let bytesOut = 0;
  for (const socket of sockets) {
    bytesIn += socket.bytesRead;
    bytesOut += socket.bytesWritten;
  }
  return { bytesIn, bytesOut };
}

async function countingFetch(url, options, headers) {
  for (const [key, value] of Object.entries(headers || {})) {
    options.headers.set(key, value);
  }
  const started = performance.now();
  const response = await nodeFetch(url, { ...options, agent, compress: true });
  wire.requests += 1;
  if ((response.headers.get('content-encoding') || '').includes('gzip')) {
    wire.gzipped += 1;
  }
  const key = `${options.method || 'GET'} ${endpoint(url)}`;
  const entry = byPath.get(key) || { count: 0, ms: 0 };
  entry.count += 1;
  entry.ms += performance.now() - started; // time to headers; the body streams after
  byPath.set(key, entry);
  return response;
}

function endpoint(url) {
  const { pathname } = new URL(url);
  const parts = pathname.split('/').filter(Boolean);
  if (parts.length < 2) {
    return parts.length ? '/{db}/' : '/';
  }
  const head = parts[1];
  if (head.startsWith('_')) {
    return `/{db}/${head}${head === '_local' ? '/{id}' : ''}`;
  }
  return '/{db}/{doc}';
}

const locals = new Map();

function local(name) {
  if (!locals.has(name)) {
    locals.set(name, new PouchDB(name, { adapter: 'memory' }));
  }
  return locals.get(name);
}

// headers: sent on every request (the enrolled device's X-Device-Token).
function remote({ url, username, password, headers }) {
  return new PouchDB(url, {
    adapter: 'http',
    auth: { username, password },
    skip_setup: true,
    fetch: (target, options) => countingFetch(target, options, headers),
  });
}

function resolve(ref) {
  return typeof ref === 'string' ? local(ref) : remote(ref);
}

async function timedReplication(source, target, options = {}) {
  const before = { ...wire, ...socketBytes() };
  byPath.clear();
  const started = performance.now();
  const result = await PouchDB.replicate(resolve(source), resolve(target), options);
  const ms = performance.now() - started;
  const after = { ...wire, ...socketBytes() };
  if (result.status !== 'complete' || result.doc_write_failures) {
    throw Object.assign(new Error(`replication ended ${result.status}`), {
      name: 'replication_failed',
      result,
    });
  }
  return {
    ms,
    docs_read: result.docs_read,
    docs_written: result.docs_written,
    requests: after.requests - before.requests,
    gzipped: after.gzipped - before.gzipped,
    bytes_in: after.bytesIn - before.bytesIn,
    bytes_out: after.bytesOut - before.bytesOut,
    by_endpoint: Object.fromEntries(
      [...byPath.entries()].map(([k, v]) => [k, { count: v.count, ms: Math.round(v.ms) }])
    ),
  };
}

// ~1 KB health records, shaped like the Python seeder's (bench/seed.py).
function record(place, prefix, n) {
  const id = `${prefix}-${String(n).padStart(6, '0')}`;
  return {
    _id: id,
    type: 'data_record',
    form: 'pregnancy_visit',
    place,
    reported_date: 1700000000000 + n * 60000,
    contact: { _id: `chw-${place}`, name: 'Device-side CHW', parent: { _id: place } },
    fields: {
      patient_id: `P${String(100000 + n)}`,
      patient_name: `Patient ${n} Device`,
      lmp_date: '2024-01-15',
      edd: '2024-10-21',
      weeks_pregnant: 12 + (n % 28),
      visit_number: 1 + (n % 8),
      danger_signs: { bleeding: false, fever: n % 7 === 0, headache: false, swelling: n % 11 === 0 },
      vitals: { bp_systolic: 110 + (n % 30), bp_diastolic: 70 + (n % 15), weight_kg: 55 + (n % 20) },
      notes:
        'Client seen at home. Counselled on birth preparedness, nutrition and danger ' +
        'signs; next visit booked. Iron and folate supplied. '.repeat(4),
    },
    geolocation: { latitude: -1.2921 + n / 1e6, longitude: 36.8219 - n / 1e6, accuracy: 12 },
    meta: { app_version: '4.2.0', device_id: 'bench-device', created_by: 'bench' },
  };
}

const ops = {
  async pull({ remote: ref, local: name, options }) {
    return timedReplication(ref, name, options);
  },
  async push({ remote: ref, local: name, options }) {
    return timedReplication(name, ref, options);
  },
  async copy({ source, target, options }) {
    return timedReplication(source, target, options);
  },
  async create({ local: name, place, prefix, count }) {
    const db = local(name);
    const docs = [];
    for (let n = 0; n < count; n++) {
      docs.push(record(place, prefix, n));
    }
    const results = await db.bulkDocs(docs);
    const failed = results.filter((r) => r.error);
    if (failed.length) {
      throw Object.assign(new Error(`${failed.length} local writes failed`), { name: 'write' });
    }
    return { written: results.length, bytes: Buffer.byteLength(JSON.stringify(docs[0])) };
  },
  async info({ local: name }) {
    const info = await local(name).info();
    return { doc_count: info.doc_count, update_seq: info.update_seq };
  },
  async get({ local: name, doc_id: docId }) {
    return local(name).get(docId, { revs: true });
  },
  async destroy({ local: name }) {
    if (locals.has(name)) {
      await locals.get(name).destroy();
      locals.delete(name);
    }
    return null;
  },
};

function plain(error) {
  return {
    name: error.name,
    status: error.status,
    message: error.message,
    result: error.result,
  };
}

async function main() {
  const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  for await (const line of lines) {
    if (!line.trim()) {
      continue;
    }
    const request = JSON.parse(line);
    let answer;
    try {
      const op = ops[request.op];
      if (!op) {
        throw Object.assign(new Error(`unknown op ${request.op}`), { name: 'bad_request' });
      }
      answer = { id: request.id, ok: true, result: await op(request) };
    } catch (error) {
      answer = { id: request.id, ok: false, error: plain(error) };
    }
    process.stdout.write(JSON.stringify(answer) + '\n');
  }
  agent.destroy();
}

main();
