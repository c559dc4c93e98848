import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createAdapter } from '@socket.io/redis-adapter';
import { Redis } from 'ioredis';
import { Server } from 'socket.io';

// The baseline the relay is measured against: the smallest Socket.IO server
// that does the same job with nothing else. No auth, no presence, no
// history, no metrics; users name themselves with ?user= and are joined to
// a room of that name; node:http (no framework) takes publishes. With
// REDIS_URL it runs on @socket.io/redis-adapter, as a plain cluster would.
//
//   POST /publish  { event, data, user? , broadcast? }
//   POST /batch    { messages: [ { event, data, user? , broadcast? } ] }

interface Publish {
  event: string;
  data?: unknown;
  user?: string;
  broadcast?: boolean;
}

const port = Number(process.env.PORT ?? 0);
const httpServer = createServer((req, res) => void route(req, res));
const io = new Server(httpServer, { transports: ['websocket', 'polling'], serveClient: false });

if (process.env.REDIS_URL) {
  const pub = new Redis(process.env.REDIS_URL);
  const sub = pub.duplicate();
  io.adapter(createAdapter(pub, sub, { key: process.env.ADAPTER_KEY ?? 'baseline' }));
}

io.on('connection', (socket) => {
  const user = socket.handshake.query.user;
  if (typeof user === 'string') socket.join(user);
});

function emit(p: Publish): void {
  if (p.broadcast) io.emit(p.event, p.data);
  else if (p.user !== undefined) io.to(p.user).emit(p.event, p.data);
}

async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  try {
    const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Publish & { messages?: Publish[] };
    if (req.method === 'POST' && req.url === '/publish') emit(body);
    else if (req.method === 'POST' && req.url === '/batch') for (const m of body.messages ?? []) emit(m);
    else {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
  } catch {
    res.writeHead(400).end();
  }
}

httpServer.listen(port, '127.0.0.1', () => {
  const address = httpServer.address() as { port: number };
  process.stdout.write(`listening ${address.port}\n`);
});
