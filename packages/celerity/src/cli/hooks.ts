import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { signWebhook } from '../api/webhook-signature.ts';
import { CliError } from './cli-error.ts';

/** The variable `hooks sign` reads the secret from when `--secret` is not given (a flag shows in `ps` and the shell's history). */
export const SECRET_ENV = 'CELERITY_WEBHOOK_SECRET';

export interface SignFlags {
  secret?: string;
  body?: string;
  bodyFile?: string;
  timestamp?: string;
}

/**
 * Adds `celerity hooks sign` to the CLI: prints the `Celerity-Signature`
 * header value for a body, so that a webhook can be sent from a shell:
 *
 *   curl ... -H "Celerity-Signature: $(celerity hooks sign --secret s --body-file b.json)" --data-binary @b.json
 */
export function registerHooks(program: Command): void {
  const hooks = program.command('hooks').description('Webhook helpers.');
  hooks
    .command('sign')
    .description('Print the Celerity-Signature header value of a body (the body as is, byte for byte: send it with curl --data-binary).')
    .option('--secret <secret>', `the webhook secret [env ${SECRET_ENV}]`)
    .option('--body <text>', 'the body, as text (UTF-8)')
    .option('--body-file <path>', 'a file holding the body; - for stdin (the default when neither --body nor --body-file is given)')
    .option('--timestamp <seconds>', 'the unix time to sign at; default now')
    .action((flags: SignFlags) => {
      const stdin = () => {
        // Waiting on a terminal for a body nobody is typing would look like a hang.
        if (process.stdin.isTTY) throw new CliError('hooks sign: give the body with --body or --body-file, or pipe it in');
        return readFileSync(0);
      };
      process.stdout.write(`${signCommand(flags, process.env, stdin)}\n`);
    });
}

/** The header value `hooks sign` prints; throws a {@link CliError} naming the flag at fault. */
export function signCommand(flags: SignFlags, env: NodeJS.ProcessEnv, stdin: () => Buffer): string {
  const secret = flags.secret ?? env[SECRET_ENV];
  if (!secret) throw new CliError(`hooks sign: give the secret with --secret or ${SECRET_ENV}`);
  if (flags.body !== undefined && flags.bodyFile !== undefined) throw new CliError('hooks sign: give --body or --body-file, not both');
  let timestamp: number | undefined;
  if (flags.timestamp !== undefined) {
    if (!/^\d{1,15}$/.test(flags.timestamp)) throw new CliError(`hooks sign: --timestamp must be unix seconds, got "${flags.timestamp}"`);
    timestamp = Number(flags.timestamp);
  }
  let body: Buffer | string;
  if (flags.body !== undefined) body = flags.body;
  else if (flags.bodyFile === undefined || flags.bodyFile === '-') body = stdin();
  else {
    try {
      body = readFileSync(flags.bodyFile);
    } catch (err) {
      throw new CliError(`hooks sign: --body-file: cannot read ${flags.bodyFile} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    }
  }
  return signWebhook(secret, body, timestamp);
}
