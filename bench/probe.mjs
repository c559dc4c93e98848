// Preloaded (--import) into every server process the benchmark starts, so the
// servers themselves stay unchanged: over the IPC channel the harness opened,
// it collects garbage and reports memory, and starts or stops the V8 CPU
// profiler around one phase (the same sampler as --cpu-prof, without the
// startup and connection work in the profile).
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import { writeHeapSnapshot } from 'node:v8';

if (process.send) {
  const session = new Session();
  session.connect();
  const post = (method, params) =>
    new Promise((resolve, reject) =>
      session.post(method, params ?? {}, (err, result) => (err ? reject(err) : resolve(result))),
    );

  const handlers = {
    async memory() {
      if (typeof globalThis.gc === 'function') {
        // Two passes with a pause: the first can leave weak callbacks and finalizers for the second.
        globalThis.gc();
        await new Promise((r) => setTimeout(r, 100));
        globalThis.gc();
      }
      return process.memoryUsage();
    },
    async heapSnapshot({ path }) {
      globalThis.gc?.();
      return { path: writeHeapSnapshot(path) };
    },
    async profileStart({ intervalUs }) {
      await post('Profiler.enable');
      await post('Profiler.setSamplingInterval', { interval: intervalUs ?? 200 });
      await post('Profiler.start');
      return {};
    },
    async profileStop({ path }) {
      const { profile } = await post('Profiler.stop');
      writeFileSync(path, JSON.stringify(profile));
      return { path };
    },
  };

  process.on('message', (msg) => {
    if (!msg || typeof msg !== 'object' || typeof msg.probe !== 'string') return;
    const handler = handlers[msg.probe];
    if (!handler) return;
    handler(msg).then(
      (result) => process.send({ probeReply: msg.id, result }),
      (err) => process.send({ probeReply: msg.id, error: String(err) }),
    );
  });
  // The IPC channel must not keep a server alive that would otherwise exit.
  process.channel?.unref();
}
