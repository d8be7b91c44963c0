-- asgi_mysql_session: the session table. Runs on MariaDB >= 10.5 and MySQL 8.
-- The provider checks these columns at open(); create_table=True and
-- `asgi-mysql-session init` apply this same statement, read from this file
-- (packaged as asgi_mysql_session/schema.sql). `asgi-mysql-session init
-- --print-sql [--table NAME]` prints it without connecting to a database.
CREATE TABLE IF NOT EXISTS `session` (
  `session_key` CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL
    COMMENT 'SHA-256 hex of the session id; the id itself is never stored',
  `session_data` MEDIUMBLOB NOT NULL
    COMMENT 'msgpack map of the session; size capped by the provider''s max_size',
  `session_expiry` INT UNSIGNED NOT NULL
    COMMENT 'absolute deadline in unix seconds; rows at or past it are dead',
  `session_version` INT UNSIGNED NOT NULL DEFAULT 1
    COMMENT 'bumped on every data write; updates are conditioned on it',
  `session_created` INT UNSIGNED NOT NULL DEFAULT 0
    COMMENT 'creation time in unix seconds (0: unknown); caps the deadline at the absolute lifetime',
  `session_owner` VARCHAR(191) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL DEFAULT NULL
    COMMENT 'optional owner (e.g. user id) so all of its sessions can be listed or ended',
  PRIMARY KEY (`session_key`),
  KEY `session_expiry` (`session_expiry`),
  KEY `session_owner` (`session_owner`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
  COMMENT='asgi_mysql_session sessions';
