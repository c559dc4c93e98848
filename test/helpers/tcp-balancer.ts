import { connect, createServer, type Socket } from 'node:net';

// A TCP load balancer in Node, in front of relay nodes, for tests that need
// to inject faults (test/helpers/balancer.ts runs the real HAProxy of
// docker-compose instead). Each connection goes to the first backend that
// accepts it (so it is sticky, and fails over when a node dies). It can also
// refuse connections for a while, or lose answers, which is what real
// networks do to clients and publishers.

export interface TcpBalancer {
  readonly url: string;
  readonly port: number;
  /** Connections accepted so far. */
  readonly connections: number;
  /** Refuse new connections (they are closed at once) until resume(). */
  pause(): void;
  resume(): void;
  /** The next `n` connections reach a backend, but whatever it answers is dropped and the client cut off. */
  loseAnswers(n: number): void;
  /** Sends new connections to these backends from now on. */
  use(backends: readonly number[]): void;
  /** Cuts every open connection, as a network failure would. */
  cut(): void;
  close(): Promise<void>;
}

export async function startTcpBalancer(initial: readonly number[]): Promise<TcpBalancer> {
  let backends = initial;
  let paused = false;
  let losing = 0;
  let connections = 0;
  const open = new Set<Socket>();
  const track = (s: Socket) => {
    open.add(s);
    s.on('close', () => open.delete(s));
    s.on('error', () => {});
  };

  const server = createServer((client) => {
    track(client);
    connections++;
    if (paused) {
      client.destroy();
      return;
    }
    const lose = losing > 0;
    if (lose) losing--;
    client.pause();
    const attempt = (i: number) => {
      if (i >= backends.length) {
        client.destroy();
        return;
      }
      const upstream = connect(backends[i]!, '127.0.0.1');
      track(upstream);
      let connected = false;
      upstream.on('error', () => {
        if (connected) client.destroy();
        else attempt(i + 1); // that node is down: fail over to the next
      });
      upstream.once('connect', () => {
        connected = true;
        client.on('error', () => upstream.destroy());
        client.pipe(upstream);
        if (lose) {
          upstream.once('data', () => {
            client.destroy();
            upstream.destroy();
          });
        } else {
          upstream.pipe(client);
        }
        upstream.on('close', () => client.destroy());
        client.on('close', () => upstream.destroy());
        client.resume();
      });
    };
    attempt(0);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    get connections() {
      return connections;
    },
    pause: () => {
      paused = true;
    },
    resume: () => {
      paused = false;
    },
    loseAnswers: (n) => {
      losing = n;
    },
    use: (ports) => {
      backends = ports;
    },
    cut: () => {
      for (const s of open) s.destroy();
    },
    close: async () => {
      for (const s of open) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
