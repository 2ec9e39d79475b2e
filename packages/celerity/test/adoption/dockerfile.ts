/**
 * A Dockerfile read as data, for tests that check the repository's
 * Dockerfiles where no Docker engine runs (deploy.test.ts, and the adoption
 * test, which runs the user-app pattern's ENTRYPOINT in a real install).
 * Enough of the syntax for those files: comments, line continuations, stages.
 */
import { readFileSync } from 'node:fs';
import { posix } from 'node:path';

export interface Instruction {
  /** Upper-case: `COPY`, `RUN`, ... */
  keyword: string;
  /** The rest of the instruction, continuations joined by a space. */
  args: string;
}

export interface Stage {
  /** The image of its FROM. */
  from: string;
  /** Its `AS` name, if any. */
  name: string | undefined;
  instructions: Instruction[];
}

export interface Dockerfile {
  stages: Stage[];
  /** The final stage: what the image runs. */
  final: Stage;
}

export function parseDockerfile(text: string): Dockerfile {
  const stages: Stage[] = [];
  let pending = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    // Comment and blank lines are dropped, inside a continuation too, as Docker does.
    if (line === '' || line.startsWith('#')) continue;
    if (line.endsWith('\\')) {
      pending += `${line.slice(0, -1).trim()} `;
      continue;
    }
    const full = (pending + line).trim();
    pending = '';
    if (full === '') continue;
    const keyword = full.split(/\s+/, 1)[0]!.toUpperCase();
    const args = full.slice(keyword.length).trim();
    if (keyword === 'FROM') {
      const m = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args);
      if (!m) throw new Error(`bad FROM: ${full}`);
      stages.push({ from: m[1]!, name: m[2], instructions: [] });
      continue;
    }
    const stage = stages.at(-1);
    if (!stage) throw new Error(`${keyword} before any FROM`);
    stage.instructions.push({ keyword, args });
  }
  const final = stages.at(-1);
  if (!final) throw new Error('no FROM in the Dockerfile');
  return { stages, final };
}

export function readDockerfile(path: string): Dockerfile {
  return parseDockerfile(readFileSync(path, 'utf8'));
}

/** The instructions `keyword` of a stage, in order. */
export function all(stage: Stage, keyword: string): Instruction[] {
  return stage.instructions.filter((i) => i.keyword === keyword);
}

/** The last `keyword` of a stage (the one that counts for ENTRYPOINT, CMD, USER, WORKDIR). */
export function last(stage: Stage, keyword: string): Instruction | undefined {
  return all(stage, keyword).at(-1);
}

/** The JSON array of an exec-form instruction; throws for the shell form (which would put a shell at PID 1). */
export function execForm(instruction: Instruction | undefined): string[] {
  if (!instruction) throw new Error('instruction missing');
  let parsed: unknown;
  try {
    parsed = JSON.parse(instruction.args);
  } catch {
    throw new Error(`${instruction.keyword} is not in exec form (a JSON array): ${instruction.args}`);
  }
  if (!Array.isArray(parsed) || parsed.some((a) => typeof a !== 'string')) throw new Error(`${instruction.keyword} is not a JSON array of strings`);
  return parsed as string[];
}

export interface Copy {
  /** `--from` stage, or undefined for the build context. */
  from: string | undefined;
  sources: string[];
  /** Absolute in the image (relative destinations resolved against WORKDIR). */
  dest: string;
}

/** The COPY instructions of a stage, with destinations made absolute. */
export function copies(stage: Stage): Copy[] {
  let workdir = '/';
  const out: Copy[] = [];
  for (const ins of stage.instructions) {
    if (ins.keyword === 'WORKDIR') workdir = posix.resolve(workdir, ins.args);
    if (ins.keyword !== 'COPY') continue;
    const words = ins.args.split(/\s+/);
    const flags = words.filter((w) => w.startsWith('--'));
    const paths = words.filter((w) => !w.startsWith('--'));
    const from = flags.find((f) => f.startsWith('--from='))?.slice('--from='.length);
    out.push({ from, sources: paths.slice(0, -1), dest: posix.resolve(workdir, paths.at(-1)!) });
  }
  return out;
}

/** The final WORKDIR of a stage ('/' if none). */
export function workdir(stage: Stage): string {
  let dir = '/';
  for (const ins of all(stage, 'WORKDIR')) dir = posix.resolve(dir, ins.args);
  return dir;
}
