using System.Data.Common;
using Microsoft.Data.Sqlite;

namespace Converge.Sqlite;

/// <summary>
/// Which SQLite errors are worth retrying. <see cref="SqliteException"/> does not override
/// <see cref="DbException.IsTransient"/> (it is always <c>false</c>), so <c>UseSqlite</c> installs
/// <see cref="IsTransient"/> as <see cref="Runtime.RetryOptions.DatabaseErrors"/>.
/// </summary>
public static class SqliteErrors
{
    // https://www.sqlite.org/rescode.html: primary result codes.
    const int Busy = 5;
    const int Locked = 6;
    const int NoMemory = 7;
    const int Interrupt = 9;
    const int IoError = 10;
    const int Full = 13;
    const int CantOpen = 14;
    const int Protocol = 15;

    /// <summary>
    /// <c>true</c> for a <see cref="SqliteException"/> whose primary result code says another try can succeed: busy and
    /// locked (another writer holds the file), interrupted, out of memory, I/O error, disk full, cannot open, and the
    /// WAL locking protocol error. Every other code (constraint violations such as UNIQUE, CHECK, NOT NULL and foreign
    /// keys; SQL errors such as a missing table; read-only, corrupt or mismatched data) fails the same way again, so it
    /// is <c>false</c>. Another provider's exception is judged by its own <see cref="DbException.IsTransient"/>.
    /// </summary>
    public static bool IsTransient(DbException exception) => exception switch
    {
        SqliteException sqlite => sqlite.SqliteErrorCode is Busy or Locked or NoMemory or Interrupt or IoError or Full or CantOpen or Protocol,
        null => throw new ArgumentNullException(nameof(exception)),
        _ => exception.IsTransient,
    };
}
