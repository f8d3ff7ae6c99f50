using System.Runtime.CompilerServices;
using Microsoft.Data.Sqlite;
using SQLitePCL;

namespace Converge.Sqlite;

/// <summary>
/// Runs callbacks when a caller's own transaction commits. The caller commits with its own
/// <c>DbTransaction</c>, which offers no event, so this listens to SQLite's commit and rollback hooks on the
/// connection. The commit hook fires just before the commit is visible to other connections, so the callbacks
/// are handed to the store, which runs them once it has seen the commit finish.
/// </summary>
internal static class CommitHooks
{
    static readonly ConditionalWeakTable<sqlite3, Pending> Hooks = new();

    public static void OnCommitted(SqliteConnection connection, SqliteMessageStore store, Action callback)
    {
        var handle = connection.Handle ?? throw new InvalidOperationException("The connection is not open.");
        var pending = Hooks.GetValue(handle, static h =>
        {
            var state = new Pending();
            raw.sqlite3_commit_hook(h, static s => ((Pending)s).Committed(), state);
            raw.sqlite3_rollback_hook(h, static s => ((Pending)s).RolledBack(), state);
            return state;
        });
        pending.Add(store, callback);
    }

    sealed class Pending
    {
        List<(SqliteMessageStore Store, Action Callback)> _callbacks = [];

        public void Add(SqliteMessageStore store, Action callback) => _callbacks.Add((store, callback));

        public int Committed()
        {
            var callbacks = _callbacks;
            if (callbacks.Count > 0)
            {
                _callbacks = [];
                foreach (var group in callbacks.GroupBy(c => c.Store))
                {
                    group.Key.AfterForeignCommit([.. group.Select(c => c.Callback)]);
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
