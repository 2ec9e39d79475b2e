/**
 * Instruction counts of a child process, from valgrind's callgrind: the
 * number of machine instructions a process ran between two moments. Unlike
 * a time or a CPU reading, the count does not move with the machine's
 * speed or with what else runs on it, so a change of a few percent in the
 * work a request or a job costs shows from one run to the next (the
 * `instructions` scenario; docs/benchmarks.md, run 22).
 *
 * A process under valgrind runs 20-100× slower, so what it is given is
 * small, and counted after a warm-up: V8 compiles its hot functions on
 * threads of their own, and the main thread's count is the one compared
 * (`main`); `all` adds those threads, which go on compiling longer under
 * valgrind than at full speed.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Proc } from './procs.ts';
import type { Scope } from './scope.ts';

const run = promisify(execFile);

/** Whether valgrind and callgrind_control are installed; the reason when not. */
export async function callgrindMissing(): Promise<string | undefined> {
  for (const tool of ['valgrind', 'callgrind_control']) {
    try {
      await run(tool, ['--version']);
    } catch {
      return `${tool} is not installed (Debian: apt-get install -y valgrind)`;
    }
  }
  return undefined;
}

export interface Counts {
  /** Instructions of the process's main thread (JavaScript's). */
  main: number;
  /** Instructions of all its threads (V8's compilers and collectors, libuv's pool). */
  all: number;
}

/** A process run under callgrind, whose counts can be zeroed and read at any moment. */
export class Counted {
  readonly proc: Proc;
  private readonly dir: string;
  private readonly env: NodeJS.ProcessEnv;
  private dumps = 0;

  constructor(scope: Scope, name: string, args: string[], env: NodeJS.ProcessEnv) {
    this.dir = mkdtempSync(join(tmpdir(), 'celerity-callgrind-'));
    this.env = env;
    scope.defer(`remove ${this.dir}`, () => rmSync(this.dir, { recursive: true, force: true }));
    // Separate threads: the main thread's count is kept apart from V8's
    // compiler threads, whose work a longer warm-up would have finished.
    this.proc = new Proc(scope, name, 'valgrind', ['--tool=callgrind', '--separate-threads=yes', `--callgrind-out-file=${join(this.dir, 'out')}`, process.execPath, ...args], { env });
  }

  /** Sets every thread's count to zero (callgrind_control -z). */
  async zero(): Promise<void> {
    this.proc.assertRunning();
    await this.control('-z');
  }

  /**
   * callgrind_control, with the process's own environment: valgrind names
   * the pipes it is reached by after `USER` and `HOST`, and a server given
   * `HOST=127.0.0.1` to listen on would otherwise not be found.
   */
  private async control(flag: '-z' | '-d'): Promise<void> {
    await run('callgrind_control', [flag, String(this.proc.pid)], { env: this.env });
  }

  /** The counts since the last zero (callgrind_control -d writes one file per thread). */
  async read(): Promise<Counts> {
    this.proc.assertRunning();
    await this.control('-d');
    this.dumps++;
    // Files are `out.<dump>-<thread>`, thread 01 the main one.
    const files = readdirSync(this.dir).filter((f) => f.startsWith(`out.${this.dumps}-`));
    let main = 0;
    let all = 0;
    for (const file of files) {
      const n = totalOf(readFileSync(join(this.dir, file), 'utf8'));
      all += n;
      if (file === `out.${this.dumps}-01`) main = n;
    }
    if (files.length === 0) throw new Error(`${this.proc.name}: callgrind wrote no dump in ${this.dir}`);
    return { main, all };
  }
}

/** The `totals:` (or `summary:`) line of a callgrind dump. */
function totalOf(dump: string): number {
  const m = /^(?:totals|summary):\s+(\d+)/m.exec(dump);
  return m ? Number(m[1]) : 0;
}
