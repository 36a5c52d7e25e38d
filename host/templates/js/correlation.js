// {{name}}: an hxp-events correlation plugin (world {{world}}).
//
// Reports each service with at least `min_errors` errors in a batch.
//
// How the WIT maps to JavaScript (componentize-js): each exported interface
// is an exported object named after it; record fields are camelCase; u64 and
// s64 are BigInt (return a Number or a BigInt); the batch's number columns are
// typed arrays (list<u64> a BigUint64Array, list<u8> a Uint8Array); an absent
// option is undefined; enums are their case names as strings. For
// result<_, string>, returning means ok and throwing a *string* means err (a
// thrown Error is not an err: the call traps).

import { log } from 'hxp:events/host@0.1.0';
import { configObject, positiveInt } from './hxp.js';

const NAME = '{{name}}';
const STATE_VERSION = 1;
const MAX_EVIDENCE = 10;
// String index of a service the event did not carry.
const ABSENT = 0xffffffff;
const OUTCOME_ERROR = 2; // event-batch.outcome

let minErrors = 3;
// Errors per service since start, as BigInt (any count the state holds stays
// exact).
let totals = new Map();

export const plugin = {
  metadata() {
    return {
      name: NAME,
      version: '0.1.0',
      stateVersion: STATE_VERSION,
      wantsPayload: false,
      freshStartOk: true,
    };
  },

  configure(config) {
    minErrors = positiveInt(configObject(config), 'min_errors', 3);
    log('info', 'configured', [['min_errors', String(minErrors)]]);
  },

  saveState() {
    const services = [...totals.keys()].sort(byCodePoint);
    return new TextEncoder().encode(
      services.map((s) => `${s}\t${totals.get(s)}\n`).join(''),
    );
  },

  loadState(stateVersion, state) {
    if (stateVersion !== STATE_VERSION) {
      throw `state version ${stateVersion} is not supported`;
    }
    let text;
    try {
      // ignoreBOM: a leading U+FEFF is part of the first service's name.
      text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(state);
    } catch {
      throw 'state is not UTF-8';
    }
    if (text !== '' && !text.endsWith('\n')) {
      throw 'state does not end with a newline';
    }
    const loaded = new Map();
    for (const line of text.split('\n').slice(0, -1)) {
      const tab = line.lastIndexOf('\t');
      const count = line.slice(tab + 1);
      if (tab < 0 || !/^[0-9]+$/.test(count)) {
        throw `bad state line: ${JSON.stringify(line)}`;
      }
      loaded.set(line.slice(0, tab), BigInt(count));
    }
    totals = loaded;
  },
};

export const correlation = {
  process(events) {
    const { seq, outcome, service, strings } = events;
    // Per service: how many errors, and the first MAX_EVIDENCE of their
    // sequence numbers.
    const errors = new Map();
    for (let i = 0; i < seq.length; i++) {
      if (outcome[i] !== OUTCOME_ERROR) continue;
      const s = service[i] === ABSENT ? 'unknown' : strings[service[i]];
      let e = errors.get(s);
      if (e === undefined) errors.set(s, (e = { n: 0, seqs: [] }));
      e.n += 1;
      if (e.seqs.length < MAX_EVIDENCE) e.seqs.push(seq[i]);
    }
    for (const [s, e] of errors) {
      totals.set(s, (totals.get(s) ?? 0n) + BigInt(e.n));
    }
    const findings = [];
    let correlationScore = 0;
    for (const s of [...errors.keys()].sort(byCodePoint)) {
      const { n, seqs } = errors.get(s);
      if (n < minErrors) continue;
      const score = Math.min(1, n / (2 * minErrors));
      correlationScore = Math.max(correlationScore, score);
      findings.push({
        name: NAME,
        source: 'rule',
        subject: s,
        alert: true,
        occurrences: n,
        score,
        message: `${n} errors from ${s} in this batch (${totals.get(s)} since start)`,
        evidence: seqs,
      });
    }
    return { findings, correlationScore };
  },
};

// Code point order, which is UTF-8 byte order (the Rust and Python templates'
// order). `<` on strings compares UTF-16 units, which puts characters above
// U+FFFF (surrogate pairs) before U+E000..U+FFFF.
function byCodePoint(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) return unitRank(x) - unitRank(y);
  }
  return a.length - b.length;
}

function unitRank(u) {
  if (u >= 0xd800 && u <= 0xdfff) return u + 0x2000;
  if (u >= 0xe000) return u - 0x800;
  return u;
}
