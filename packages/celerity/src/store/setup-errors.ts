import { StoreSetupError } from '../errors.ts';
import type { MigrationTarget } from './migrations.ts';

/**
 * Maps a driver error met while opening or migrating the store to a
 * {@link StoreSetupError} that names the setting and the fix, or returns
 * undefined for a passing fault worth a retry. PostgreSQL codes:
 * https://www.postgresql.org/docs/current/errcodes-appendix.html
 */
export function setupError(err: unknown, target?: MigrationTarget): StoreSetupError | undefined {
  if (err instanceof StoreSetupError) return err;
  const e = err as { code?: string; message?: string; address?: string; port?: number; hostname?: string };
  const message = firstLine(e.message ?? String(err));
  switch (e.code) {
    case 'ECONNREFUSED':
      return new StoreSetupError('DATABASE_URL', `PostgreSQL refused the connection${e.address ? ` at ${e.address}:${e.port}` : ''}`, 'start PostgreSQL or point DATABASE_URL at a running server', {
        cause: err,
      });
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return new StoreSetupError('DATABASE_URL', `unknown host ${e.hostname ?? ''}`.trim(), 'fix the host in DATABASE_URL', { cause: err });
    case 'ETIMEDOUT':
      return new StoreSetupError('DATABASE_URL', 'the connection to PostgreSQL timed out', 'check the host, the port and the firewall in DATABASE_URL', { cause: err });
    case '3D000':
      return new StoreSetupError('DATABASE_URL', message, 'create the database (createdb) or point DATABASE_URL at an existing one', { cause: err });
    case '28P01':
    case '28000':
      return new StoreSetupError('DATABASE_URL', message, 'fix the user and password in DATABASE_URL', { cause: err });
    case '42501':
      return new StoreSetupError('DATABASE_URL', message, 'grant the user CREATE on the database, or create the schema for it', { cause: err });
    case '42P07':
    case '42710':
    case '42P06':
      if (!target) return undefined;
      return new StoreSetupError(target.clash.setting, `${message} in schema "${target.schema ?? 'main'}", and it is not Celerity's`, target.clash.fix, { cause: err }, true);
    case 'SQLITE_CANTOPEN':
    case 'SQLITE_READONLY':
    case 'SQLITE_NOTADB':
      return new StoreSetupError('CELERITY_SQLITE_PATH', message, 'point CELERITY_SQLITE_PATH at a writable SQLite file', { cause: err });
    case 'SQLITE_ERROR':
      if (/already exists/.test(message) && target) {
        return new StoreSetupError(target.clash.setting, `${message}, and it is not Celerity's`, target.clash.fix, { cause: err }, true);
      }
      return undefined;
    default:
      return undefined;
  }
}

function firstLine(s: string): string {
  return s.split('\n')[0]!;
}
