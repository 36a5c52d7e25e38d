export const plugin = {
  metadata: () => ({ name: 'minimal-js', version: '0.1.0', stateVersion: 1, wantsPayload: false, freshStartOk: true }),
  configure() {},
  saveState: () => new Uint8Array(),
  loadState() {},
};
export const responses = {
  decide(input) {
    if (input.analytics.overall.errorRate <= 0.5) return [];
    return [{ rule: 'minimal', action: 'page_oncall', target: 'team', parameters: '{}', reason: '' }];
  },
};
