// {{name}}: an hxp-events analytics plugin (world {{world}}).
//
// Keeps the events of the last `window_secs` seconds and reports their count,
// rates, average latency and error rate.
//
// How the WIT maps to JavaScript (componentize-js): each exported interface
// is an exported object named after it; record fields are camelCase; u64 and
// s64 are BigInt (return a Number or a BigInt); the batch's number columns are
// typed arrays (list<s64> a BigInt64Array, list<f64> a Float64Array, list<u8>
// a Uint8Array); an absent option is undefined; enums are their case names as
// strings. For result<_, string>, returning means ok and throwing a *string*
// means err (a thrown Error is not an err: the call traps).

import { log, nowMs } from 'hxp:events/host@0.1.0';
import { configObject, positiveInt } from './hxp.js';

const NAME = '{{name}}';
const STATE_VERSION = 1;
// An event in the saved state: time_ms i64, latency_ms f64, kind u8,
// outcome u8, little endian, as the Python template writes it.
const ENTRY_SIZE = 18;
const LLM_REQUEST = 0; // event-batch.kind
const OUTCOME_ERROR = 2; // event-batch.outcome

let windowSecs = 60;
// { timeMs (BigInt), kind, latencyMs (NaN when none), outcome } in the order
// folded in.
let entries = [];

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
    windowSecs = positiveInt(configObject(config), 'window_secs', 60);
    log('info', 'configured', [['window_secs', String(windowSecs)]]);
  },

  saveState() {
    const state = new Uint8Array(entries.length * ENTRY_SIZE);
    const view = new DataView(state.buffer);
    entries.forEach((e, i) => {
      const at = i * ENTRY_SIZE;
      view.setBigInt64(at, e.timeMs, true);
      view.setFloat64(at + 8, e.latencyMs, true);
      view.setUint8(at + 16, e.kind);
      view.setUint8(at + 17, e.outcome);
    });
    return state;
  },

  loadState(stateVersion, state) {
    if (stateVersion !== STATE_VERSION) {
      throw `state version ${stateVersion} is not supported`;
    }
    if (state.length % ENTRY_SIZE !== 0) {
      throw 'state is not a whole number of entries';
    }
    const view = new DataView(state.buffer, state.byteOffset, state.byteLength);
    const loaded = [];
    for (let at = 0; at < state.length; at += ENTRY_SIZE) {
      loaded.push({
        timeMs: view.getBigInt64(at, true),
        latencyMs: view.getFloat64(at + 8, true),
        kind: view.getUint8(at + 16),
        outcome: view.getUint8(at + 17),
      });
    }
    entries = loaded;
  },
};

export const analytics = {
  process(events) {
    const { timeMs, kind, latencyMs, outcome } = events;
    for (let i = 0; i < timeMs.length; i++) {
      entries.push({
        timeMs: timeMs[i],
        kind: kind[i],
        latencyMs: latencyMs[i],
        outcome: outcome[i],
      });
    }
    const cutoff = nowMs() - BigInt(windowSecs) * 1000n;
    entries = entries.filter((e) => e.timeMs > cutoff);
  },

  snapshot() {
    const now = nowMs();
    const start = now - BigInt(windowSecs) * 1000n;
    let count = 0;
    let requests = 0;
    let latencyCount = 0;
    let latencySum = 0;
    let outcomes = 0;
    let errors = 0;
    for (const e of entries) {
      if (!(e.timeMs > start && e.timeMs <= now)) continue;
      count += 1;
      if (e.kind === LLM_REQUEST) requests += 1;
      if (!Number.isNaN(e.latencyMs)) {
        latencyCount += 1;
        latencySum += e.latencyMs;
      }
      if (e.outcome !== 0) {
        outcomes += 1;
        if (e.outcome === OUTCOME_ERROR) errors += 1;
      }
    }
    return {
      timeMs: now,
      windowSecs,
      coveredSecs: windowSecs,
      overall: {
        count,
        throughput: count / windowSecs,
        requestsPerSecond: requests / windowSecs,
        latencyCount,
        latencyAvg: latencyCount > 0 ? latencySum / latencyCount : undefined,
        latencyP50: undefined,
        latencyP95: undefined,
        latencyP99: undefined,
        latencyExact: false,
        outcomeCount: outcomes,
        errorCount: errors,
        errorRate: outcomes > 0 ? errors / outcomes : 0,
        userSatisfaction: undefined,
        satisfactionCount: 0,
        businessValue: 0,
        costPerRequest: undefined,
      },
      perKind: [],
      services: [],
    };
  },
};
