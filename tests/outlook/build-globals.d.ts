// What scripts/build-outlook prepends to launchevent.js: the policy and the core as plain JS.
declare var DEMAIL_POLICY: string | undefined;
declare var DemailCoreJs: {
  call(op: string, policy: string, input: string, nowMs: number, entropy: Uint8Array): string;
};
