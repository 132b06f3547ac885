export { runDaemon } from './main.js';
export { startAllInOne, type RunningDaemon } from './all-in-one.js';
export { startTier } from './tier.js';
export { compileDaemonOptions, TIERS, type DaemonOptions, type TierName } from './options.js';
