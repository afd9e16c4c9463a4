# frozen_string_literal: true

# BOSH ops-file semantics (cppforlife/go-patch, what `bosh int -o` applies): `replace` and
# `remove` operations on a YAML document, with paths of key, index, `-` (append) and `name=value`
# tokens, `?` optionality (applying to the token and everything to its right) and the
# `:before`/`:after`/`:prev`/`:next` index modifiers.

require 'json'

module OpsFile
  class Error < StandardError; end

  KeyToken = Struct.new(:key, :optional)
  IndexToken = Struct.new(:index, :modifiers)
  AppendToken = Class.new
  MatchToken = Struct.new(:key, :value, :optional, :modifiers)

  def self.apply_all(doc, ops)
    ops.each_with_index do |op, i|
      doc = apply(doc, op)
    rescue Error => e
      raise Error, "operation [#{i}] #{op['type']} #{op['path']}: #{e.message}"
    end
    doc
  end

  def self.apply(doc, op)
    tokens = parse(op.fetch('path'))
    case op.fetch('type')
    when 'replace' then replace(doc, tokens, deep_copy(op['value']))
    when 'remove' then remove(doc, tokens)
    else raise Error, "unknown operation type #{op['type']}"
    end
  end

  def self.deep_copy(value)
    JSON.parse(JSON.generate(value))  # also un-shares YAML aliases, as go-yaml decoding does
  end

  def self.unescape(text)
    text.gsub('~1', '/').gsub('~7', ':').gsub('~0', '~')
  end

  def self.parse(path)
    raise Error, "expected path to start with '/'" unless path.start_with?('/')
    return [] if path == '/'

    optional = false
    path.split('/', -1).drop(1).map do |raw|
      name, *modifiers = raw.split(':')
      name = unescape(name)
      modifiers = modifiers.map { |m| unescape(m) }
      if name.end_with?('?')
        optional = true
        name = name.chomp('?')
      end
      if name == '-'
        AppendToken.new
      elsif name.match?(/\A-?\d+\z/)
        IndexToken.new(name.to_i, modifiers)
      elsif name.include?('=')
        key, value = name.split('=', 2)
        MatchToken.new(key, value, optional, modifiers)
      else
        KeyToken.new(name, optional)
      end
    end
  end

  # Index into `array` for an index token, honouring :prev/:next.
  def self.resolve_index(array, token)
    idx = token.index.negative? ? array.length + token.index : token.index
    token.modifiers.each do |m|
      case m
      when 'prev' then idx -= 1
      when 'next' then idx += 1
      when 'before', 'after' then nil
      else raise Error, "unknown index modifier '#{m}'"
      end
    end
    raise Error, "expected index #{token.index} to be within array bounds (#{array.length})" if idx.negative? || idx >= array.length

    idx
  end

  def self.matches(array, token)
    array.each_index.select { |i| array[i].is_a?(Hash) && array[i][token.key].to_s == token.value }
  end

  def self.insert_or_set(array, idx, value, modifiers)
    if modifiers.include?('before') then array.insert(idx, value)
    elsif modifiers.include?('after') then array.insert(idx + 1, value)
    else array[idx] = value
    end
  end

  def self.replace(doc, tokens, value)
    return value if tokens.empty?

    parent = doc
    tokens.each_with_index do |token, i|
      last = i == tokens.length - 1
      case token
      when AppendToken
        raise Error, "expected array for '-'" unless parent.is_a?(Array)
        raise Error, "'-' must be the last token" unless last

        parent << value
      when IndexToken
        raise Error, "expected array at index #{token.index}" unless parent.is_a?(Array)

        idx = resolve_index(parent, token)
        return insert_or_set(parent, idx, value, token.modifiers) && doc if last

        parent = parent[idx]
      when MatchToken
        raise Error, "expected array to match #{token.key}=#{token.value}" unless parent.is_a?(Array)

        found = matches(parent, token)
        raise Error, "found #{found.length} items matching #{token.key}=#{token.value}" if found.length > 1

        if found.empty?
          raise Error, "found no items matching #{token.key}=#{token.value}" unless token.optional

          parent << (last ? value : { token.key => token.value })
          return doc if last

          parent = parent.last
        else
          return insert_or_set(parent, found.first, value, token.modifiers) && doc if last

          parent = parent[found.first]
        end
      when KeyToken
        raise Error, "expected map for key '#{token.key}'" unless parent.is_a?(Hash)

        if last
          parent[token.key] = value
          return doc
        end
        unless parent.key?(token.key)
          raise Error, "expected to find a map key '#{token.key}'" unless token.optional

          nxt = tokens[i + 1]
          parent[token.key] = nxt.is_a?(KeyToken) ? {} : []
        end
        parent = parent[token.key]
      end
    end
    doc
  end

  def self.remove(doc, tokens)
    raise Error, 'cannot remove the document root' if tokens.empty?

    parent = doc
    tokens.each_with_index do |token, i|
      last = i == tokens.length - 1
      case token
      when AppendToken
        raise Error, "'-' cannot be removed"
      when IndexToken
        raise Error, "expected array at index #{token.index}" unless parent.is_a?(Array)

        idx = resolve_index(parent, token)
        return parent.delete_at(idx) && doc if last

        parent = parent[idx]
      when MatchToken
        raise Error, "expected array to match #{token.key}=#{token.value}" unless parent.is_a?(Array)

        found = matches(parent, token)
        raise Error, "found #{found.length} items matching #{token.key}=#{token.value}" if found.length > 1
        if found.empty?
          return doc if token.optional

          raise Error, "found no items matching #{token.key}=#{token.value}"
        end
        return parent.delete_at(found.first) && doc if last

        parent = parent[found.first]
      when KeyToken
        raise Error, "expected map for key '#{token.key}'" unless parent.is_a?(Hash)
        unless parent.key?(token.key)
          return doc if token.optional

          raise Error, "expected to find a map key '#{token.key}'"
        end
        if last
          parent.delete(token.key)
          return doc
        end
        parent = parent[token.key]
      end
    end
    doc
  end
end
