using System.Runtime.CompilerServices;
using Microsoft.Data.Sqlite;
using SQLitePCL;

namespace Converge.Sqlite;

/// <summary>
/// Runs callbacks when a caller's own transaction commits. The caller commits with its own
/// <c>DbTransaction</c>, which offers no event, so this listens to SQLite's commit and rollback hooks on the
/// connection. The commit hook fires just before the commit finishes; that is safe for wake-ups because a
/// consumer claims with a write, which waits for this commit to release the write lock.
/// </summary>
internal static class CommitHooks
{
    static readonly ConditionalWeakTable<sqlite3, Pending> Hooks = new();

    public static void OnCommitted(SqliteConnection connection, Action callback)
    {
        var handle = connection.Handle ?? throw new InvalidOperationException("The connection is not open.");
        var pending = Hooks.GetValue(handle, static h =>
        {
            var state = new Pending();
            raw.sqlite3_commit_hook(h, static s => ((Pending)s).Committed(), state);
            raw.sqlite3_rollback_hook(h, static s => ((Pending)s).RolledBack(), state);
            return state;
        });
        pending.Add(callback);
    }

    sealed class Pending
    {
        List<Action> _callbacks = [];

        public void Add(Action callback) => _callbacks.Add(callback);

        public int Committed()
        {
            var callbacks = _callbacks;
            if (callbacks.Count > 0)
            {
                _callbacks = [];
                foreach (var callback in callbacks)
                {
                    callback();
                }
            }

            return 0;
        }

        public void RolledBack()
        {
            if (_callbacks.Count > 0)
            {
                _callbacks = [];
            }
        }
    }
}
