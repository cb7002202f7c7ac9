# MFMODAL_REQUIRE_PKG(VARIABLE-PREFIX, MODULES, DEBIAN-PACKAGE)
# -------------------------------------------------------------
# Look MODULES up with pkg-config and stop with the Debian package to install
# when they are missing.
AC_DEFUN([MFMODAL_REQUIRE_PKG], [
  PKG_CHECK_MODULES([$1], [$2], [],
    [AC_MSG_ERROR([$2 not found by pkg-config: install the Debian package $3 (sudo apt-get install $3), or set PKG_CONFIG_PATH])])
])
