export { createBuilder, runCreate } from './create.js';
export { inspectBuilder, runInspect } from './inspect.js';
export { lsBuilder, runLs } from './ls.js';
export { rmBuilder, runRm } from './rm.js';
export { runSync, syncBuilder } from './sync.js';
export { runVersion, versionBuilder } from './version.js';
export { runSet, runUnset, setBuilder, unsetBuilder } from './set.js';
export { runWatch, watchBuilder } from './watch.js';
export { runVerify, verifyBuilder } from './verify.js';
