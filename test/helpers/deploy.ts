import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { ConfigError, loadConfig } from '../../src/config/index.js';
import { KNOWN_VARIABLES } from '../../src/config/schema.js';
import { startInProcess } from './nodes.js';

// The deployment files as the tools that consume them see them: the
// Dockerfile's instructions, docker-compose.yml after Compose's interpolation,
// and the Kubernetes manifests as kustomize renders them.

export const ROOT = resolve(import.meta.dirname, '../..');

export const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
  version: string;
  bin: Record<string, string>;
  dependencies: Record<string, string>;
};

/** The image every deployment file runs: this repository's, tagged with the package version. */
export const IMAGE = `pushrelay:${pkg.version}`;

/** The problems the relay would refuse an environment with, or undefined when it starts. */
export function refusal(env: Record<string, string>): string[] | undefined {
  try {
    loadConfig(env);
    return undefined;
  } catch (err) {
    if (err instanceof ConfigError) return [...err.problems];
    throw err;
  }
}

/** Variable names the relay does not read (the config schema does not declare them). */
export function unknownVariables(names: Iterable<string>): string[] {
  return [...names].filter((n) => !KNOWN_VARIABLES.has(n));
}

// ---------------------------------------------------------------------------
// Dockerfile

export interface Instruction {
  readonly op: string;
  /** The text after the keyword, continuation lines joined. */
  readonly args: string;
  /** The exec form (`["node", "x"]`) parsed, when the arguments are a JSON array. */
  readonly exec?: string[];
}

export interface Stage {
  readonly from: string;
  readonly name?: string;
  readonly instructions: Instruction[];
}

export function readDockerfile(path = join(ROOT, 'Dockerfile')): { args: Instruction[]; stages: Stage[] } {
  const lines = readFileSync(path, 'utf8').split('\n');
  const logical: string[] = [];
  let current = '';
  for (const raw of lines) {
    const line = raw.trimEnd();
    if (current === '' && (line.trim() === '' || line.trim().startsWith('#'))) continue;
    if (current !== '' && line.trim().startsWith('#')) continue;
    if (line.endsWith('\\')) {
      current += `${line.slice(0, -1).trim()} `;
      continue;
    }
    logical.push((current + line.trim()).trim());
    current = '';
  }
  const args: Instruction[] = [];
  const stages: Stage[] = [];
  for (const l of logical) {
    const m = /^(\w+)\s+(.*)$/.exec(l);
    if (!m) throw new Error(`Dockerfile: cannot parse "${l}"`);
    const op = m[1]!.toUpperCase();
    const rest = m[2]!;
    let exec: string[] | undefined;
    const json = /^(?:--\S+\s+)*(?:CMD\s+)?(\[.*\])$/.exec(rest);
    if (json) {
      try {
        exec = JSON.parse(json[1]!) as string[];
      } catch {
        exec = undefined;
      }
    }
    const ins: Instruction = exec ? { op, args: rest, exec } : { op, args: rest };
    if (op === 'FROM') {
      const f = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(rest)!;
      stages.push(f[2] ? { from: f[1]!, name: f[2], instructions: [] } : { from: f[1]!, instructions: [] });
    } else if (stages.length === 0) {
      args.push(ins);
    } else {
      stages.at(-1)!.instructions.push(ins);
    }
  }
  return { args, stages };
}

// ---------------------------------------------------------------------------
// docker-compose.yml

/**
 * Compose's variable interpolation: `${VAR}`, `${VAR:-default}` (unset or
 * empty), `${VAR-default}` (unset), `$VAR`, and `$$` for a literal dollar.
 */
export function interpolate(text: string, env: Record<string, string | undefined> = {}): string {
  return text.replace(
    /\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?)-([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)/g,
    (whole, braced?: string, colon?: string, def?: string, bare?: string) => {
      if (whole === '$$') return '$';
      const name = (braced ?? bare)!;
      const value = env[name];
      if (def !== undefined) {
        if (value === undefined || (colon === ':' && value === '')) return def;
      }
      return value ?? '';
    },
  );
}

export interface ComposeService {
  image?: string;
  build?: string | { context: string };
  command?: string[];
  entrypoint?: string[];
  environment?: Record<string, string | number | boolean | null>;
  ports?: string[];
  depends_on?: string[] | Record<string, unknown>;
  stop_grace_period?: string;
  healthcheck?: { test: string[] };
  configs?: { source: string; target: string }[];
  profiles?: string[];
}

export interface Compose {
  services: Record<string, ComposeService>;
  configs: Record<string, { content?: string; file?: string }>;
}

/** docker-compose.yml as `docker compose config` would resolve it with this environment (merge keys included). */
export function readCompose(env: Record<string, string | undefined> = {}): Compose {
  const raw = readFileSync(join(ROOT, 'docker-compose.yml'), 'utf8');
  // Interpolate values, not the whole text: comments and the inline configs may hold "$".
  const doc = parse(raw, { merge: true }) as Compose;
  const walk = (v: unknown): unknown => {
    if (typeof v === 'string') return interpolate(v, env);
    if (Array.isArray(v)) return v.map(walk);
    if (v && typeof v === 'object')
      return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, walk(x)]));
    return v;
  };
  return walk(doc) as Compose;
}

/** A service's environment as the container gets it: every value a string. */
export function serviceEnv(service: ComposeService): Record<string, string> {
  return Object.fromEntries(
    Object.entries(service.environment ?? {}).map(([k, v]) => [k, v === null ? '' : String(v)]),
  );
}

/** Compose durations ("25s", "1m30s") in seconds. */
export function durationSeconds(text: string): number {
  let total = 0;
  const re = /(\d+(?:\.\d+)?)(h|ms|m|s|us)/g;
  let matched = '';
  for (const m of text.matchAll(re)) {
    matched += m[0];
    const n = Number(m[1]);
    total += { h: 3600, m: 60, s: 1, ms: 0.001, us: 0.000001 }[m[2] as 'h' | 'm' | 's' | 'ms' | 'us'] * n;
  }
  if (matched !== text) throw new Error(`not a duration: ${text}`);
  return total;
}

/** The relay services: those built from this repository. */
export function relayServices(compose: Compose): [string, ComposeService][] {
  return Object.entries(compose.services).filter(([, s]) => s.build !== undefined);
}

/**
 * The compose file's HAProxy configuration with only the addresses changed:
 * the frontend binds `bind`, and relay server N points at `servers[N]`.
 */
export function haproxyConfig(
  compose: Compose,
  { bind, servers }: { bind: string; servers: Record<string, string> },
): { text: string; serverLines: number; bindLines: number } {
  const content = compose.configs.haproxy?.content;
  if (!content) throw new Error('docker-compose.yml has no inline haproxy config');
  let serverLines = 0;
  let bindLines = 0;
  const text = content
    .split('\n')
    .map((line) => {
      const bindMatch = /^(\s*bind\s+)\S+(.*)$/.exec(line);
      if (bindMatch) {
        bindLines++;
        return `${bindMatch[1]}${bind}${bindMatch[2]}`;
      }
      const server = /^(\s*server\s+(\S+)\s+)\S+(.*)$/.exec(line);
      if (server) {
        const address = servers[server[2]!];
        if (!address) throw new Error(`no address given for haproxy server ${server[2]}`);
        serverLines++;
        return `${server[1]}${address}${server[3]}`;
      }
      return line;
    })
    .join('\n');
  return { text, serverLines, bindLines };
}

// ---------------------------------------------------------------------------
// Kubernetes

export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: {
    name: string;
    namespace?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  };
  // biome-ignore lint/suspicious/noExplicitAny: manifests are checked field by field in the tests
  [field: string]: any;
}

export interface Rendered {
  readonly how: 'kubectl kustomize' | 'YAML files';
  readonly objects: K8sObject[];
}

/** kubectl, if installed; KUBECTL=none reads the YAML files instead (what a machine without it does). */
export function kubectl(): string | undefined {
  if (process.env.KUBECTL === 'none') return undefined;
  if (process.env.KUBECTL) return process.env.KUBECTL;
  for (const dir of (process.env.PATH ?? '').split(':').concat('/usr/bin', '/usr/local/bin')) {
    const candidate = join(dir, 'kubectl');
    if (dir && existsSync(candidate)) return candidate;
  }
  return undefined;
}

/** The objects a kustomization produces: `kubectl kustomize` when kubectl is installed, else the files read here. */
export function renderKustomization(dir: string): Rendered {
  const bin = kubectl();
  if (bin) {
    const out = execFileSync(bin, ['kustomize', dir], { encoding: 'utf8', maxBuffer: 16 * 1024 * 1024 });
    return { how: 'kubectl kustomize', objects: parseManifests(out) };
  }
  return { how: 'YAML files', objects: readKustomization(dir) };
}

export function parseManifests(text: string): K8sObject[] {
  return parseAllDocuments(text)
    .map((d) => {
      if (d.errors.length > 0) throw d.errors[0];
      return d.toJS() as K8sObject | null;
    })
    .filter((o): o is K8sObject => o !== null);
}

/** Every YAML file under a folder, recursively, relative to ROOT. */
export function yamlFiles(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir)) {
    const path = join(dir, entry);
    if (statSync(path).isDirectory()) out.push(...yamlFiles(path));
    else if (/\.ya?ml$/.test(entry)) out.push(relative(ROOT, path));
  }
  return out.sort();
}

interface Generator {
  name: string;
  behavior?: 'create' | 'merge' | 'replace';
  literals?: string[];
  files?: string[];
  options?: { labels?: Record<string, string> };
}

interface Kustomization {
  namespace?: string;
  resources?: string[];
  labels?: { pairs: Record<string, string> }[];
  configMapGenerator?: Generator[];
  secretGenerator?: Generator[];
  patches?: { patch: string; target?: { kind?: string; name?: string } }[];
}

/**
 * The subset of kustomize these manifests use, for machines without kubectl:
 * resources (files and folders), generators from literals and files, labels,
 * a namespace, JSON 6902 patches and `$patch: delete`. Generated names keep
 * no hash suffix; the tests match names with or without one.
 */
export function readKustomization(dir: string): K8sObject[] {
  const k = parse(readFileSync(join(dir, 'kustomization.yaml'), 'utf8')) as Kustomization;
  let objects: K8sObject[] = [];
  for (const r of k.resources ?? []) {
    const path = resolve(dir, r);
    if (statSync(path).isDirectory()) objects.push(...readKustomization(path));
    else objects.push(...parseManifests(readFileSync(path, 'utf8')));
  }
  const generate = (kind: 'ConfigMap' | 'Secret', g: Generator) => {
    const data: Record<string, string> = {};
    for (const l of g.literals ?? []) {
      const i = l.indexOf('=');
      data[l.slice(0, i)] = l.slice(i + 1);
    }
    for (const f of g.files ?? []) data[f.split('/').at(-1)!] = readFileSync(join(dir, f), 'utf8');
    const existing = objects.find((o) => o.kind === kind && o.metadata.name === g.name);
    if (existing && g.behavior === 'merge') {
      const field = kind === 'Secret' ? 'stringData' : 'data';
      existing[field] = { ...(existing[field] ?? existing.data ?? {}), ...data };
      return;
    }
    objects.push({
      apiVersion: 'v1',
      kind,
      metadata: { name: g.name, ...(g.options?.labels ? { labels: g.options.labels } : {}) },
      ...(kind === 'Secret' ? { type: 'Opaque', stringData: data } : { data }),
    });
  };
  for (const g of k.configMapGenerator ?? []) generate('ConfigMap', g);
  for (const g of k.secretGenerator ?? []) generate('Secret', g);
  for (const l of k.labels ?? []) {
    for (const o of objects) o.metadata.labels = { ...l.pairs, ...o.metadata.labels };
  }
  for (const p of k.patches ?? []) {
    const patch = parse(p.patch) as unknown;
    if (Array.isArray(patch)) {
      for (const o of objects) {
        if (p.target?.kind && o.kind !== p.target.kind) continue;
        if (p.target?.name && o.metadata.name !== p.target.name) continue;
        for (const op of patch as { op: string; path: string; value?: unknown }[]) jsonPatch(o, op);
      }
    } else {
      const sm = patch as K8sObject & { $patch?: string };
      if (sm.$patch === 'delete') {
        objects = objects.filter((o) => !(o.kind === sm.kind && o.metadata.name === sm.metadata.name));
      }
    }
  }
  if (k.namespace) {
    for (const o of objects) if (o.kind !== 'Namespace') o.metadata.namespace = k.namespace;
  }
  return objects;
}

function jsonPatch(target: K8sObject, op: { op: string; path: string; value?: unknown }): void {
  const parts = op.path
    .split('/')
    .slice(1)
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
  const last = parts.pop()!;
  // biome-ignore lint/suspicious/noExplicitAny: walking arbitrary manifest JSON
  let node: any = target;
  for (const p of parts) node = node[p];
  if (op.op === 'remove') {
    if (Array.isArray(node)) node.splice(Number(last), 1);
    else delete node[last];
  } else if (op.op === 'replace' || op.op === 'add') {
    node[last] = op.value;
  } else {
    throw new Error(`unsupported patch op ${op.op}`);
  }
}

/** The object of a kind whose name is `name`, or `name` with kustomize's hash suffix. */
export function findObject(objects: K8sObject[], kind: string, name: string): K8sObject | undefined {
  return objects.find(
    (o) =>
      o.kind === kind &&
      (o.metadata.name === name || new RegExp(`^${name}-[a-z0-9]{10}$`).test(o.metadata.name)),
  );
}

/** A random-looking secret production accepts, for filling in the example Secret and compose variables. */
export const FILLED_SECRET = '6f1c9e2b7a4d8035be91c4f7a2d60e3b58c1f9a7d2e4b6c8';

/**
 * A relay in this process for the file's tests, answering the paths the
 * deployment files point at (probes, ingress paths, metrics); returns the
 * status a request gets.
 */
export function relayAnswering(): {
  status(method: string, path: string): Promise<number>;
  fetch(path: string): Promise<Response>;
} {
  let relay: Awaited<ReturnType<typeof startInProcess>> | undefined;
  beforeAll(async () => {
    relay = await startInProcess();
  });
  afterAll(async () => {
    await relay?.stop();
  });
  const get = (path: string, init?: RequestInit) => fetch(`${relay!.url}${path}`, init);
  return {
    status: async (method, path) => (await get(path, { method })).status,
    fetch: (path) => get(path),
  };
}
