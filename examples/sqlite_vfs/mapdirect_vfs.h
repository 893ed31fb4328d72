/* SPDX-License-Identifier: MIT */
/* mapdirect_vfs: an SQLite VFS ("mapdirect") that writes the main database,
 * rollback journal and WAL files through mapdirect::direct_mapping. */
#ifndef MAPDIRECT_VFS_H
#define MAPDIRECT_VFS_H

#ifdef __cplusplus
extern "C" {
#endif

/* Registers the "mapdirect" VFS (on top of the "unix" VFS); make_default != 0
 * makes it the default VFS. Idempotent and thread-safe. Returns an SQLite
 * result code (SQLITE_ERROR when no unix VFS exists). For programs linking
 * libmapdirect_vfs_static; the loadable extension registers itself. */
int mapdirect_vfs_register(int make_default);

#ifdef __cplusplus
}
#endif

#endif
