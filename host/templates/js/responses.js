// {{name}}: an hxp-events responses plugin (world {{world}}).
//
// Pages on-call when the window's error rate is over `error_rate_threshold`.
//
// How the WIT maps to JavaScript (componentize-js): each exported interface
// is an exported object named after it; record fields are camelCase; u64 and
// s64 are BigInt (return a Number or a BigInt); list<u8> is a Uint8Array;
// an absent option is undefined; enums are their case names as strings. For
// result<_, string>, returning means ok and throwing a *string* means err (a
// thrown Error is not an err: the call traps).

import { log } from 'hxp:events/host@0.1.0';
import { configObject, number } from './hxp.js';

const NAME = '{{name}}';
const STATE_VERSION = 1;

let errorRateThreshold = 0.2;
// Decisions that asked for an action, since start (a BigInt: any count the
// state holds stays exact).
let decisions = 0n;

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
    errorRateThreshold = number(configObject(config), 'error_rate_threshold', 0.2);
  },

  saveState() {
    return new TextEncoder().encode(String(decisions));
  },

  loadState(stateVersion, state) {
    if (stateVersion !== STATE_VERSION) {
      throw `state version ${stateVersion} is not supported`;
    }
    // ASCII digits only, at least one.
    if (state.length === 0 || !state.every((b) => b >= 0x30 && b <= 0x39)) {
      throw 'state is not a decimal count';
    }
    decisions = BigInt(new TextDecoder().decode(state));
  },
};

export const responses = {
  decide(input) {
    const o = input.analytics.overall;
    if (!(o.outcomeCount > 0n && o.errorRate > errorRateThreshold)) {
      return [];
    }
    decisions += 1n;
    const errors = o.errorCount;
    const requests = o.outcomeCount;
    log('warn', 'paging on-call', [
      ['errors', String(errors)],
      ['requests', String(requests)],
    ]);
    return [
      {
        rule: NAME,
        action: 'page_oncall',
        target: 'team',
        // Integers only: float text differs between languages.
        parameters: `{"errors":${errors},"requests":${requests}}`,
        reason: `${errors} errors in ${requests} requests over the last ${input.analytics.windowSecs} s`,
      },
    ];
  },
};
