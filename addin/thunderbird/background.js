// @ts-check
// Background (MV3 event page, ES module): wires the add-in logic to Thunderbird.
// All listeners are registered synchronously at start so the event page wakes for
// compose.onBeforeSend and messages.onNewMailReceived after being suspended.
// The core (wasm) is loaded through the shared wrapper copied into the .xpi.
import { loadCore } from "./shared/demail-core.js";
import { createAddin } from "./lib/addin.js";

const addin = createAddin({ messenger: browser, loadCore });
addin.register();
addin.start();
