import { buildApp } from './app.js';
import { ConfigError, loadConfig, loadDevSecrets, redactUrls } from './config/index.js';

// Load config -> build app -> listen; SIGTERM drains, then exits 0.

export async function main(env: NodeJS.ProcessEnv = process.env): Promise<void> {
  let config: ReturnType<typeof loadConfig>;
  try {
    // Development secrets are kept per checkout, so every dev node started here shares them.
    config = loadConfig(env, { devSecrets: () => loadDevSecrets(process.cwd()) });
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`pushrelay: ${err.message}\n`);
      process.exit(1);
    }
    throw err;
  }
  const relay = await buildApp(config);
  await relay.http.listen({ port: config.port, host: config.host });
  relay.log.info({ port: config.port, host: config.host, mode: config.mode }, 'listening');

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) {
      relay.log.warn({ signal }, 'second signal: closing now');
      await relay.close();
      process.exit(0);
    }
    stopping = true;
    relay.log.info({ signal, drainSeconds: config.drainSeconds }, 'shutting down');
    await relay.drain();
    // Closing Redis and sockets takes milliseconds; if something holds it up,
    // exit anyway well inside the grace period the orchestrator allows.
    setTimeout(() => {
      relay.log.warn('close took longer than 5 s; exiting');
      process.exit(0);
    }, 5000).unref();
    await relay.close();
    relay.log.info('bye');
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
}

const invokedDirectly =
  process.argv[1] !== undefined && import.meta.url === new URL(`file://${process.argv[1]}`).href;
if (invokedDirectly) {
  main().catch((err: unknown) => {
    // A Redis or webhook URL in an error must not put its password in the logs.
    process.stderr.write(`pushrelay: failed to start: ${redactUrls((err as Error).stack ?? String(err))}\n`);
    process.exit(1);
  });
}
